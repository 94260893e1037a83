"""The HDF5 formats of the simulation stages: generated particle-level jets, the tracker's
tracks and truth vertices, the calorimeter's cells, particle-gun events (schema name,
version and fields).

Bump a schema's version whenever its fields or their meaning change: readers refuse
files of another version with an error naming the file.

Conventions: momenta and energies in GeV, lengths in mm, times in mm/c, angles in rad.
Jet flavour: 5 = b, 4 = c, 0 = light. Particle ids are PDG codes.
"""

from __future__ import annotations

from pipeline.io.hdf5 import Collection, FileSchema, fields

EVENTS = Collection(
    "events",
    None,
    fields(
        ("event", "i8", "", "event number within the shard"),
        ("pv_x", "f8", "mm", "true primary vertex x (beam spot)"),
        ("pv_y", "f8", "mm", "true primary vertex y"),
        ("pv_z", "f8", "mm", "true primary vertex z"),
        ("weight", "f8", "", "Pythia event weight"),
    ),
    "one row per generated event (also events without selected jets)",
)

JETS = Collection(
    "jets",
    "events",
    fields(
        ("pt", "f4", "GeV", "jet transverse momentum"),
        ("eta", "f4", "", "jet pseudorapidity"),
        ("phi", "f4", "rad", "jet azimuth in (-pi, pi]"),
        ("mass", "f4", "GeV", "jet invariant mass"),
        ("flavour", "i1", "", "5 = b, 4 = c, 0 = light (weakly decaying hadron within match_dr)"),
    ),
    "particle-level jets passing the sample's pT and |eta| cuts, ordered by decreasing pT",
)

HADRONS = Collection(
    "hadrons",
    "jets",
    fields(
        ("pdgid", "i4", "", "PDG id of the weakly decaying b or c hadron"),
        ("flavour", "i1", "", "5 = b hadron, 4 = c hadron"),
        ("px", "f4", "GeV", "momentum x"),
        ("py", "f4", "GeV", "momentum y"),
        ("pz", "f4", "GeV", "momentum z"),
        ("energy", "f4", "GeV", "energy"),
        ("prod_x", "f8", "mm", "production vertex x"),
        ("prod_y", "f8", "mm", "production vertex y"),
        ("prod_z", "f8", "mm", "production vertex z"),
        ("decay_x", "f8", "mm", "decay vertex x (production point of its daughters)"),
        ("decay_y", "f8", "mm", "decay vertex y"),
        ("decay_z", "f8", "mm", "decay vertex z"),
        ("index", "i4", "", "index of the hadron in the Pythia event record"),
    ),
    "weakly decaying b and c hadrons matched to the jet (each to its nearest jet)",
)

CONSTITUENTS = Collection(
    "constituents",
    "jets",
    fields(
        ("px", "f4", "GeV", "momentum x"),
        ("py", "f4", "GeV", "momentum y"),
        ("pz", "f4", "GeV", "momentum z"),
        ("energy", "f4", "GeV", "energy"),
        ("pdgid", "i4", "", "PDG id"),
        ("charge", "i1", "e", "electric charge"),
        ("vx", "f8", "mm", "true production vertex x"),
        ("vy", "f8", "mm", "true production vertex y"),
        ("vz", "f8", "mm", "true production vertex z"),
        ("vt", "f8", "mm/c", "true production time"),
        ("parent_index", "i4", "", "event-record index of the particle whose decay made the production vertex; 0 = primary vertex"),
        ("parent_pdgid", "i4", "", "PDG id of that particle; 0 = primary vertex"),
    ),
    "visible final-state particles clustered into the jet (no neutrinos)",
)

PARTICLE_LEVEL_JETS = Collection(
    "jets",
    "events",
    JETS.fields + fields(
        ("top_contained", "i1", "", "1 if a hadronically decaying top quark, its b quark and both quarks of "
         "its W decay all lie within the jet radius of the jet axis (the landscape paper's top-jet matching)"),
    ),
    JETS.description,
)

PARTICLES = Collection(
    "particles",
    "events",
    fields(
        ("px", "f4", "GeV", "momentum x"),
        ("py", "f4", "GeV", "momentum y"),
        ("pz", "f4", "GeV", "momentum z"),
        ("energy", "f4", "GeV", "energy"),
        ("pdgid", "i4", "", "PDG id"),
        ("charge", "i1", "e", "electric charge"),
        ("vx", "f4", "mm", "true production vertex x"),
        ("vy", "f4", "mm", "true production vertex y"),
        ("vz", "f4", "mm", "true production vertex z"),
    ),
    "every visible final-state particle of the event within the sample's particles.max_abs_eta, the "
    "calorimeter's input; empty unless the sample sets particles.store",
)

PARTICLE_JETS = FileSchema(
    "particle_jets",
    2,
    (EVENTS, PARTICLE_LEVEL_JETS, HADRONS, CONSTITUENTS, PARTICLES),
    "generator output: particle-level jets with constituents and their true vertices, and optionally "
    "every visible particle of the event",
)

TRACKS = Collection(
    "tracks",
    "jets",
    fields(
        ("d0", "f4", "mm", "transverse impact parameter w.r.t. the beam line (ATLAS sign convention), smeared"),
        ("z0", "f4", "mm", "longitudinal impact parameter at the perigee, smeared"),
        ("phi", "f4", "rad", "azimuth of the momentum at the perigee, smeared"),
        ("theta", "f4", "rad", "polar angle, smeared"),
        ("qoverp", "f4", "1/GeV", "charge over momentum, smeared"),
        ("sigma_d0", "f4", "mm", "resolution of d0"),
        ("sigma_z0", "f4", "mm", "resolution of z0"),
        ("sigma_phi", "f4", "rad", "resolution of phi"),
        ("sigma_theta", "f4", "rad", "resolution of theta"),
        ("sigma_qoverp", "f4", "1/GeV", "resolution of q/p"),
        ("pt", "f4", "GeV", "transverse momentum from the smeared q/p and theta"),
        ("eta", "f4", "", "pseudorapidity from the smeared theta"),
        ("charge", "i1", "e", "charge (sign of q/p)"),
        ("true_d0", "f4", "mm", "true d0"),
        ("true_z0", "f4", "mm", "true z0"),
        ("true_phi", "f4", "rad", "true phi at the perigee"),
        ("true_theta", "f4", "rad", "true theta"),
        ("true_qoverp", "f4", "1/GeV", "true q/p"),
        ("pdgid", "i4", "", "PDG id of the particle"),
        ("vertex", "i4", "", "truth label: index of the track's production vertex within the jet (a partition of the jet's tracks)"),
        ("prod_x", "f8", "mm", "true production vertex x"),
        ("prod_y", "f8", "mm", "true production vertex y"),
        ("prod_z", "f8", "mm", "true production vertex z"),
    ),
    "reconstructed tracks of the jet's charged constituents, ordered by decreasing pT",
)

VERTICES = Collection(
    "vertices",
    "jets",
    fields(
        ("x", "f8", "mm", "true vertex position x (the first track's production point)"),
        ("y", "f8", "mm", "true vertex position y"),
        ("z", "f8", "mm", "true vertex position z"),
        ("n_tracks", "i4", "", "number of the jet's tracks from this vertex"),
        ("primary", "i1", "", "1 if this is the primary vertex"),
        ("hadron_pdgid", "i4", "", "PDG id of the particle whose decay made the vertex (the earliest in the record among its tracks); 0 = primary"),
        ("hadron_index", "i4", "", "event-record index of that particle; 0 = primary"),
    ),
    "true vertices of the jet's tracks: row k is the vertex with label k",
)

TRACK_JETS = FileSchema(
    "track_jets",
    1,
    (EVENTS, JETS, HADRONS, TRACKS, VERTICES),
    "tracker output: jets with smeared tracks, their truth vertex partition and the jet's b/c hadrons",
)


CALORIMETER_CELLS = FileSchema(
    "calorimeter_cells",
    1,
    (
        Collection("events", None, fields(
            ("event", "i8", "", "event number within the shard"),
        ), "one row per event of the particle_jets shard, in its order"),
        Collection("cells", "events", fields(
            ("layer", "i1", "", "layer index (the file's calorimeter settings name the layers)"),
            ("ieta", "i2", "", "cell index in eta: the centre is -max_abs_eta + (ieta + 0.5) deta"),
            ("iphi", "i2", "", "cell index in phi: the centre is -pi + (iphi + 0.5) 2 pi / nphi"),
            ("energy", "f4", "GeV", "measured energy at the EM scale: sampling-smeared deposits plus noise"),
            ("energy_charged", "f4", "GeV", "true visible deposit of charged incident particles"),
            ("energy_neutral", "f4", "GeV", "true visible deposit of neutral incident particles"),
        ), "zero-suppressed cells ordered by (layer, ieta, iphi)"),
    ),
    "calorimeter output: the cells of every event with their charged and neutral truth",
)

GUN_EVENTS = FileSchema(
    "gun_events",
    1,
    (
        Collection("events", None, fields(
            ("event", "i8", "", "event number within the shard"),
            ("weight", "f8", "", "event weight: 1, gun events are unweighted"),
        ), "one row per generated event"),
        Collection("primaries", "events", fields(
            ("pdgid", "i4", "", "PDG id"),
            ("charge", "i1", "e", "electric charge"),
            ("px", "f8", "GeV", "momentum x"),
            ("py", "f8", "GeV", "momentum y"),
            ("pz", "f8", "GeV", "momentum z"),
            ("energy", "f8", "GeV", "energy"),
            ("vx", "f8", "mm", "production vertex x"),
            ("vy", "f8", "mm", "production vertex y"),
            ("vz", "f8", "mm", "production vertex z"),
        ), "the gun's particles, in the order of the sample's gun.particles (row k of an event is particle k)"),
        Collection("particles", "events", PARTICLES.fields + fields(
            ("primary", "i2", "", "index within the event of the gun particle it is (if stable) or descends from"),
        ), "every visible final-state particle of the event (no neutrinos), in Pythia's record order: "
           "the calorimeter's input"),
    ),
    "particle-gun output: the gun's particles and what is left of them after Pythia's decays",
)

#: The simulation's file schemas, by name.
SCHEMAS = {schema.name: schema for schema in (PARTICLE_JETS, TRACK_JETS, CALORIMETER_CELLS, GUN_EVENTS)}
