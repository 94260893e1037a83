"""The vertexing study's methods, named once: the CLI's choices, the workflow's wildcards
and the tables all read them here."""

#: Secondary-vertex finders trained on the track sets (Set2Graph and its baselines: Shlomi et al., EPJC 81 (2021) 540).
LEARNED = ("track_pair", "rnn", "set2graph")
#: Every vertex finder compared: the classical ones (AVR, and ours) first.
METHODS = ("avr", "baseline", *LEARNED)
#: Partitions without a finder: the scale of the metrics.
TRIVIAL_PARTITIONS = ("single_vertex", "all_singletons")
