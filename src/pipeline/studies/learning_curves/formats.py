"""The learning curves' HDF5 formats: none of their own. A point's training subset is a file
of its study's format (``track_graphs``, ``jet_images``), with two more attributes,
``learning_curve_fraction`` and ``learning_curve_source``; the results are CSV, Markdown and
figures."""

#: This study's file schemas, by name (none: see the module docstring).
SCHEMAS: dict = {}
