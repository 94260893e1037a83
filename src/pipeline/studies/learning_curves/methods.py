"""The learning curves' methods, named once: the learned networks of the studies they
measure, each under its own (unique) name, and the study it belongs to."""

#: {method: the study whose network it is}: the vertex finders of the EPJC paper and the
#: landscape paper's image taggers.
STUDY_OF = {"track_pair": "vertexing", "rnn": "vertexing", "set2graph": "vertexing",
            "mlp": "jet_images", "cnn": "jet_images"}
METHODS = tuple(STUDY_OF)
#: Every method is trained (once per point and seed).
LEARNED = METHODS
#: The studies whose learning curves can be measured.
CURVED_STUDIES = ("vertexing", "jet_images")
