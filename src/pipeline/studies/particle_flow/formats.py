"""The particle-flow study's HDF5 format (``particle_flow_images``): per event the window's
calorimeter cells at the detector's and at the fine granularity with their charged and
neutral truth, the topo-clusters, the track and the true pions. Bump the version whenever
its fields or their meaning change.

Cells are stored sparsely (a calorimeter event lights up a few hundred of the window's
~7700 detector and 24576 fine cells): ``cells`` only the detector cells of topo-clusters
(the readout after the clustering's zero suppression), ``fine_cells`` every fine cell
with a deposit. Indices are window-relative (``simulation.window_geometry``), energies GeV.
"""

from __future__ import annotations

from pipeline.io.hdf5 import Collection, Field, FileSchema, fields

#: The calorimeter layers (three EM, three HAD, as the authors' detector; the config's
#: schema asks for six), the shape of the per-layer track fields.
N_LAYERS = 6

PARTICLE_FLOW_IMAGES = FileSchema(
    "particle_flow_images",
    1,
    (
        Collection("events", None, fields(
            ("event", "i8", "", "event number within its shard"),
            ("shard", "i4", "", "shard of its sample"),
            ("window_eta", "f8", "", "pseudorapidity of the window's centre: the track's impact on the front face"),
            ("window_phi", "f8", "rad", "azimuth of the window's centre"),
            ("charged_energy", "f4", "GeV", "true energy of the charged pion(s) (0 without one)"),
            ("neutral_energy", "f4", "GeV", "true energy of the neutral pion(s) (0 without one)"),
            ("charged_eta", "f4", "", "true impact of the charged pion on the front face, window-relative eta"),
            ("charged_phi", "f4", "rad", "true impact of the charged pion on the front face, window-relative phi"),
            ("neutral_eta", "f4", "", "impact of the neutral pion's direction on the front face, window-relative"),
            ("neutral_phi", "f4", "rad", "impact of the neutral pion's direction on the front face, window-relative"),
            ("has_track", "i1", "", "1 if the charged pion was tracked"),
            ("track_p", "f4", "GeV", "track momentum (smeared), NaN without a track"),
            ("track_pt", "f4", "GeV", "track transverse momentum (smeared)"),
            ("track_eta", "f4", "", "track pseudorapidity at the perigee"),
            ("track_phi", "f4", "rad", "track azimuth at the perigee"),
            ("track_d0", "f4", "mm", "track transverse impact parameter"),
            ("track_z0", "f4", "mm", "track longitudinal impact parameter"),
            ("track_qoverp", "f4", "1/GeV", "track charge over momentum"),
            ("track_sigma_qoverp", "f4", "1/GeV", "resolution of q/p"),
        ) + (
            Field("track_layer_eta", "f4", "", "the track extrapolated to each layer's mid-depth, "
                  "window-relative eta (NaN without a track)", (N_LAYERS,)),
            Field("track_layer_phi", "f4", "rad", "the track extrapolated to each layer's mid-depth, "
                  "window-relative phi", (N_LAYERS,)),
        ), "one row per generated event"),
        Collection("cells", "events", fields(
            ("layer", "u1", "", "calorimeter layer, front to back"),
            ("ieta", "u2", "", "detector-cell index in eta within the window"),
            ("iphi", "u2", "", "detector-cell index in phi within the window"),
            ("energy", "f4", "GeV", "measured energy: the sum of the fine cells plus the cell's electronic noise"),
            ("energy_charged", "f4", "GeV", "true deposit of the charged pion's shower"),
            ("energy_neutral", "f4", "GeV", "true deposit of the neutral pion's shower"),
            ("cluster", "i2", "", "topo-cluster within the event, 0 the most energetic"),
        ), "detector cells in topo-clusters, ordered by layer, ieta, iphi"),
        Collection("fine_cells", "events", fields(
            ("layer", "u1", "", "calorimeter layer, front to back"),
            ("ieta", "u2", "", "fine-cell index in eta within the window"),
            ("iphi", "u2", "", "fine-cell index in phi within the window"),
            ("energy", "f4", "GeV", "sampling-smeared deposit, without noise"),
            ("energy_charged", "f4", "GeV", "true deposit of the charged pion's shower"),
            ("energy_neutral", "f4", "GeV", "true deposit of the neutral pion's shower"),
        ), "fine cells with a (true or measured) deposit, ordered by layer, ieta, iphi"),
    ),
    "calorimeter images of the particle-flow study: detector and fine cells, truth, topo-clusters, track",
)


#: This study's file schemas, by name.
SCHEMAS = {PARTICLE_FLOW_IMAGES.name: PARTICLE_FLOW_IMAGES}
