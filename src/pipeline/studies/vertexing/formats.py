"""The vertexing study's HDF5 formats: track sets of the vertex finders (``track_graphs``)
and every finder's partition of the test jets (``vertex_predictions``); and the study's
list of methods. Bump a schema's version whenever its fields or their meaning change."""

from __future__ import annotations

from pipeline.io.hdf5 import Collection, Field, FileSchema, fields
from pipeline.simulation.formats import JETS
from pipeline.studies.vertexing.methods import METHODS, TRIVIAL_PARTITIONS

#: Per-track features of the vertex finders, in the column order of ``features``.
TRACK_FEATURES = (
    "d0", "z0", "phi", "cot_theta", "log_pt", "charge",
    "delta_phi", "delta_eta", "pt_fraction", "d0_significance", "z0_significance",
    "log_sigma_d0", "log_sigma_z0", "log_sigma_phi", "log_sigma_theta", "log_sigma_qoverp",
    "jet_log_pt", "jet_eta", "jet_phi", "jet_mass",
)

GRAPH_JETS = Collection(
    "jets",
    None,
    JETS.fields + fields(
        ("n_tracks", "i4", "", "number of tracks"),
        ("source_jet", "i8", "", "row of the jet in the track_jets file it came from"),
    ),
    "jets with min_tracks..max_tracks tracks, ordered by track count within chunks",
)

GRAPH_TRACKS = Collection(
    "tracks",
    "jets",
    (
        Field("features", "f4", "", "standardised track features, columns as the file's feature_names "
              "attribute (raw = features * feature_std + feature_mean; d0, z0 in mm, angles in rad, pT in GeV)",
              (len(TRACK_FEATURES),)),
        Field("vertex", "i4", "", "truth label: the track's vertex within the jet"),
    ),
    "the jet's tracks, ordered by decreasing pT",
)

TRACK_GRAPHS = FileSchema(
    "track_graphs",
    1,
    (GRAPH_JETS, GRAPH_TRACKS),
    "vertex-finding input: standardised track features and the truth partition per jet",
)

VERTEX_PREDICTIONS = FileSchema(
    "vertex_predictions",
    1,
    (
        Collection("jets", None, fields(
            ("flavour", "i1", "", "5 = b, 4 = c, 0 = light"),
            ("n_tracks", "i4", "", "number of tracks"),
            ("jet_index", "i8", "", "row of the jet in the track_graphs test file"),
        ), "the test jets"),
        Collection("tracks", "jets", (
            Field("truth", "i4", "", "true vertex label"),
            *(Field(m, "i4", "", f"vertex label predicted by {m}") for m in (*METHODS, *TRIVIAL_PARTITIONS)),
        ), "per track: the true and every method's vertex label"),
    ),
    "every vertex finder's partition of the test jets, with the truth",
)

#: This study's file schemas, by name.
SCHEMAS = {schema.name: schema for schema in (TRACK_GRAPHS, VERTEX_PREDICTIONS)}
