"""pipeline: from Pythia 8 events through a fast detector model to HDF5, models and figures."""

__version__ = "0.1.0"
