"""The schema is the one source of defaults: each study's network, built by the study's own
code from a config that sets nothing but a sample, has the sizes written in
``schemas/config.schema.yaml``, and the network constructors refuse a missing setting
instead of filling in one of their own."""

from __future__ import annotations

import pytest
from default_config import default_config, default_optimiser, vertex_finder_training
from torch import nn

from pipeline.config_schema import schema
from pipeline.studies.flavour_tagging.models import FlavourTagger
from pipeline.studies.particle_flow.models import FractionUNet, ParticleFlowModule
from pipeline.studies.super_resolution.models import SuperResolutionModule
from pipeline.studies.vertexing.formats import TRACK_FEATURES
from pipeline.studies.vertexing.models import VertexFinder
from pipeline.studies.vertexing.models import build_network as vertex_finder_network


def written(*path: str):
    """The default the schema file writes for the key at ``path`` (section, ..., key)."""
    node = schema()
    for key in path:
        node = node["properties"][key]
    return node["default"]


def linear_widths(module: nn.Module) -> list[int]:
    """in_features of the first and out_features of every nn.Linear, in order."""
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return [layers[0].in_features, *(m.out_features for m in layers)]


def test_particle_flow_networks_are_the_schemas():
    from pipeline.ml.trainer import study_training_config
    from pipeline.studies.particle_flow.train import build_model

    config = study_training_config(default_config(), "particle_flow")
    shapes = [(layer["n_eta"], layer["n_phi"]) for layer in written("particle_flow", "calorimeter", "layers")]
    cnn = build_model(config, "cnn")
    assert cnn.hparams.settings == {"fine": written("particle_flow", "calorimeter", "fine"),
                                    "channels": written("particle_flow", "cnn", "channels"),
                                    "energy_scale": written("particle_flow", "cnn", "energy_scale")}
    unet = cnn.network
    assert unet.layer_shapes == shapes and unet.fine == written("particle_flow", "calorimeter", "fine")
    assert [block[0].out_channels for block in unet.encoder] == written("particle_flow", "cnn", "channels")
    assert unet.energy_scale == written("particle_flow", "cnn", "energy_scale")

    graph = build_model(config, "graph").network
    section = {key: written("particle_flow", "graph", key)
               for key in ("k", "width", "n_layers", "depth_step", "dynamic", "energy_scale")}
    assert graph.layer_shapes == shapes and list(graph.window) == written("particle_flow", "calorimeter", "window")
    assert (graph.k, graph.depth_step, graph.dynamic, graph.energy_scale) == (
        section["k"], section["depth_step"], section["dynamic"], section["energy_scale"])
    assert len(graph.convs) == section["n_layers"]
    assert all(conv.nn[-2].out_features == section["width"] for conv in graph.convs)


def test_super_resolution_networks_are_the_schemas():
    from pipeline.ml.trainer import study_training_config
    from pipeline.studies.super_resolution.train import build_model

    config = study_training_config(default_config(), "super_resolution")
    for method in ("redistribute", "cnn"):
        module = build_model(config, method)
        trunk = module.network.trunk
        assert module.hparams.settings == {key: written("super_resolution", "network", key)
                                           for key in ("channels", "blocks", "energy_scale")}
        assert trunk.layer_shapes == [tuple(s) for s in written("super_resolution", "granularity")]
        assert trunk.fine == written("particle_flow", "calorimeter", "fine")
        assert trunk.channels == written("super_resolution", "network", "channels")
        assert len(trunk.blocks) == written("super_resolution", "network", "blocks")
        assert trunk.energy_scale == written("super_resolution", "network", "energy_scale")


def test_vertex_finders_are_the_schemas():
    network = default_config()["vertexing"]["network"]
    n = len(TRACK_FEATURES)
    encoder, edges = vertex_finder_network("set2graph", n, network)
    assert [layer.own.out_features for layer in encoder.layers] == written("vertexing", "network", "set_widths")
    assert linear_widths(edges.mlp)[1:-1] == written("vertexing", "network", "edge_widths")
    _, edges = vertex_finder_network("track_pair", n, network)
    assert linear_widths(edges.mlp)[1:-1] == written("vertexing", "network", "pair_widths")
    encoder, edges = vertex_finder_network("rnn", n, network)
    assert (encoder.gru.hidden_size, encoder.gru.num_layers) == (written("vertexing", "network", "rnn_hidden"),
                                                                 written("vertexing", "network", "rnn_layers"))
    assert linear_widths(edges.mlp)[1:-1] == written("vertexing", "network", "edge_widths")


def test_flavour_tagger_is_the_schemas():
    study = default_config()["flavour_tagging"]
    # As train_flavour_tagger builds it.
    tagger = FlavourTagger(len(TRACK_FEATURES), study["width"], study["message_layers"], study["readout_widths"],
                           **default_optimiser())
    width = written("flavour_tagging", "width")
    assert tagger.embedding.own.out_features == width and len(tagger.layers) == written("flavour_tagging",
                                                                                        "message_layers")
    assert linear_widths(tagger.readout)[1:-1] == written("flavour_tagging", "readout_widths")


def test_jet_image_models_are_the_schemas():
    from pipeline.ml.trainer import study_training_config
    from pipeline.studies.jet_images.train import build_model

    config = study_training_config(default_config(), "jet_images")
    pixels = written("jet_images", "pixels")
    mlp = build_model(config, "mlp")
    assert linear_widths(mlp.backbone) == [pixels * pixels, *written("jet_images", "mlp", "widths")]
    assert mlp.hparams.dropout == written("jet_images", "mlp", "dropout")
    cnn = build_model(config, "cnn")
    convolutions = [m.out_channels for m in cnn.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert convolutions == written("jet_images", "cnn", "channels")
    assert linear_widths(cnn.backbone)[-1] == written("jet_images", "cnn", "dense")
    assert cnn.hparams.dropout == written("jet_images", "cnn", "dropout")
    autoencoder = build_model(config, "autoencoder")
    assert autoencoder.encoder[-1].out_features == written("jet_images", "autoencoder", "latent")
    assert [m.out_channels for m in autoencoder.encoder.modules() if isinstance(m, nn.Conv2d)] == written(
        "jet_images", "autoencoder", "channels")
    assert autoencoder.hparams.normalised == written("jet_images", "normalise")


def test_constructors_refuse_a_missing_setting():
    config = default_config()
    pf_cnn = {**config["particle_flow"]["cnn"], "fine": 64}
    shapes = [(layer["n_eta"], layer["n_phi"]) for layer in config["particle_flow"]["calorimeter"]["layers"]]
    with pytest.raises(ValueError, match=r"missing \['energy_scale'\]"):
        ParticleFlowModule("cnn", shapes, {key: v for key, v in pf_cnn.items() if key != "energy_scale"}, **default_optimiser())
    with pytest.raises(TypeError, match="energy_scale"):
        FractionUNet(shapes, fine=64, channels=[4], use_track=True)
    sr_network = config["super_resolution"]["network"]
    with pytest.raises(ValueError, match=r"missing \['blocks'\]"):
        SuperResolutionModule("cnn", config["super_resolution"]["granularity"], 64,
                              {key: v for key, v in sr_network.items() if key != "blocks"}, **default_optimiser())
    vertexing = {key: v for key, v in config["vertexing"]["network"].items() if key != "rnn_hidden"}
    with pytest.raises(ValueError, match=r"vertex finder 'rnn': network settings missing \['rnn_hidden'\]"):
        VertexFinder("rnn", len(TRACK_FEATURES), vertexing, **vertex_finder_training())
    with pytest.raises(TypeError, match="readout_widths"):
        FlavourTagger(len(TRACK_FEATURES), 8, 1, **default_optimiser())
    # Nor the training settings: the learning rate, its schedule and the threshold are the config's.
    with pytest.raises(TypeError, match="learning_rate"):
        ParticleFlowModule("cnn", shapes, pf_cnn, lr_schedule="constant")
    with pytest.raises(TypeError, match="threshold"):
        VertexFinder("rnn", len(TRACK_FEATURES), config["vertexing"]["network"], **default_optimiser())
