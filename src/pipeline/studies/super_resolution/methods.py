"""The super-resolution study's methods, named once: the CLI's choices, the workflow's
wildcards, the checkpoints' names and the rows of the tables."""

#: The interpolations: every coarse cell's energy shared equally among its fine cells, or
#: bicubically interpolated and renormalised to each coarse cell's energy.
INTERPOLATIONS = ("uniform", "bicubic")
#: The learned models: the energy-conserving redistribution (a softmax over each coarse
#: cell's sub-cells) and the free residual CNN with sub-pixel upsampling.
LEARNED = ("redistribute", "cnn")
METHODS = (*INTERPOLATIONS, *LEARNED)
#: The references the physics table quotes beside the methods: the fine truth and the
#: detector's coarse image on its own cells.
REFERENCES = ("fine", "coarse")
