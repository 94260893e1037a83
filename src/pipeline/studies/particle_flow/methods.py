"""The particle-flow study's methods, named once: the CLI's choices, the workflow's
wildcards, the checkpoints' names and the rows of the tables."""

#: The non-learned baseline: ATLAS's parametrised charged-energy subtraction.
BASELINE = "parametrised"
#: The learned models: the UNet on the image stack, the graph network on the cells, and the
#: UNet without the track channel (the ablation).
LEARNED = ("cnn", "graph", "cnn_no_track")
METHODS = (BASELINE, *LEARNED)
