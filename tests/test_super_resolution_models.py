"""The super-resolution study's batches, networks and training on small gun files: the
batches hold the file's cells, the sub-pixel rearrangement and the energy sharing are
what they claim, the networks' shapes and energy conservation, learning on a fixed batch,
and a real training through ``train_super_resolution`` with its checkpoint round trip."""

from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch
from default_config import default_optimiser, super_resolution_settings, super_resolution_shapes

from pipeline.io.hdf5 import RaggedReader, parent_index, read_tree
from pipeline.ml.checkpoints import load_module
from pipeline.ml.layers import signed_log, to_fine
from pipeline.run_config import resolve_config
from pipeline.simulation.gun import generate_gun_shard
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES
from pipeline.studies.super_resolution.batches import EVALUATION_FIELDS, SuperResolutionBatches, fine_mean_squares
from pipeline.studies.super_resolution.data import SuperResolutionDataModule, SuperResolutionDataset
from pipeline.studies.super_resolution.detector import build_shard, detector_config
from pipeline.studies.super_resolution.interpolation import bicubic, to_coarse
from pipeline.studies.super_resolution.models import (
    EnergySharing,
    SuperResolutionModule,
    build_network,
    event_relative_mse,
    fine_loss,
    fine_mse,
    sub_pixel,
)

PI_PLUS = {"pdgid": 211, "energy": [2.0, 20.0], "eta": [-0.4, 0.4], "phi": [-3.1, 3.1]}
PI_ZERO_OFFSET = {"pdgid": 111, "energy": [2.0, 20.0],
                  "offset": {"from": 0, "theta": [math.pi / 200, math.pi / 100], "phi": [math.pi / 200, math.pi / 100]}}
PI_ZERO = {"pdgid": 111, "energy": [7.0, 12.0], "eta": [-0.4, 0.4], "phi": [-3.1, 3.1]}
#: The tiny networks of these tests.
TINY = {"channels": 4, "blocks": 1}
#: The layers of the schema's default super-resolution detector.
SHAPES = super_resolution_shapes()
#: The small network's complete settings: the schema's defaults but for TINY.
NETWORK = super_resolution_settings(**TINY)
FACTORS = [(1, 2), (2, 2), (2, 2), (4, 4), (4, 4), (8, 8)]
#: A second detector for the noise-free file: em2 with non-square 4 x 2 cells.
OTHER_GRANULARITY = [[64, 32], [16, 32], [32, 32], [16, 16], [16, 16], [8, 8]]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the training's ``training.threads``: on a busy two-core machine
    two threads contend and make these small networks ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def study_config(tmp_path, noise: float | None = None, granularity=None) -> dict:
    """The study's two gun samples (pi+ with a nearby pi0: 24 events; pi0 alone: 40), tiny
    networks, one-epoch training on the CPU, MLflow and the resume directory under tmp_path."""
    raw = {"seed": 11,
           "samples": {"pflow": {"process": "particle_gun", "events_per_shard": 24, "shards": 1,
                                 "gun": {"particles": [PI_PLUS, PI_ZERO_OFFSET]}},
                       "pi0": {"process": "particle_gun", "events_per_shard": 40, "shards": 1,
                               "gun": {"particles": [PI_ZERO]}}},
           "particle_flow": {"sample": "pflow", "calibration": "pflow"},
           "super_resolution": {"sample": "pflow", "pi0_sample": "pi0", "network": dict(TINY),
                                "training": {"max_epochs": 1, "batch_size": 16}},
           "training": {"accelerator": "cpu", "threads": 1, "resume_dir": str(tmp_path / "resume")},
           "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    if granularity is not None:
        raw["super_resolution"]["granularity"] = granularity
    if noise is not None:
        layers = resolve_config(copy.deepcopy(raw))["particle_flow"]["calorimeter"]["layers"]
        raw["particle_flow"]["calorimeter"] = {"layers": [{**layer, "noise": noise} for layer in layers]}
    return resolve_config(raw)


def images_of(directory, config, sample: str, name: str):
    generated, images = directory / f"{name}_gen.h5", directory / f"{name}.h5"
    generate_gun_shard(config, sample, 0, generated, progress=False)
    build_shard(config, generated, images, progress=False)
    return images


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The study's config and its files: ``pflow`` and ``pi0`` (default detector and noise),
    ``quiet`` (pflow events, no noise to speak of, OTHER_GRANULARITY)."""
    directory = tmp_path_factory.mktemp("super_resolution")
    config = study_config(directory)
    quiet = study_config(directory, noise=1e-7, granularity=OTHER_GRANULARITY)
    return {"config": config, "directory": directory, "pflow": images_of(directory, config, "pflow", "pflow"),
            "pi0": images_of(directory, config, "pi0", "pi0"), "quiet": images_of(directory, quiet, "pflow", "quiet")}


def read_file(path) -> tuple[dict, dict]:
    with RaggedReader(path, PARTICLE_FLOW_IMAGES) as reader:
        return read_tree(reader, 0, reader.n_rows("events"))


def scattered(cells: dict, event: np.ndarray, field: str, shape) -> np.ndarray:
    """(n_events, *shape) images of one layer's cells, summed into place."""
    image = np.zeros(shape, np.float64)
    np.add.at(image, (event, cells["ieta"].astype(int), cells["iphi"].astype(int)), cells[field])
    return image


def all_batches(batches: SuperResolutionBatches) -> dict:
    """The batches of a file concatenated along the events."""
    items = [batches[i] for i in range(len(batches))]
    out = {key: np.concatenate([item[key] for item in items]) for key in ("track", "fine", "row")}
    out["coarse"] = [np.concatenate([item["coarse"][l] for item in items]) for l in range(len(batches.shapes))]
    if batches.evaluation:
        out["fine_neutral"] = np.concatenate([item["fine_neutral"] for item in items])
        out["events"] = {key: np.concatenate([item["events"][key] for item in items]) for key in EVALUATION_FIELDS}
    return out


def test_batches_hold_the_files_cells(files):
    arrays, offsets = read_file(files["pflow"])
    geometry = WindowGeometry.from_config(detector_config(files["config"]))
    batches = SuperResolutionBatches(files["pflow"], 10, evaluation=True)
    assert len(batches) == 3 and batches.n_events == 24 and batches.fine == 64
    assert batches.shapes == geometry.shapes == [tuple(s) for s in SHAPES]
    assert batches.factors == FACTORS and batches.layer_names == geometry.names and batches.window == (0.8, 0.8)
    assert [len(batches[i]["row"]) for i in range(3)] == [10, 10, 4]
    batch = all_batches(batches)
    np.testing.assert_array_equal(batch["row"], np.arange(24))
    cells, fine = arrays["cells"], arrays["fine_cells"]
    cell_event, fine_event = parent_index(offsets["cells"]), parent_index(offsets["fine_cells"])
    for l, (n_eta, n_phi) in enumerate(geometry.shapes):
        c, f = cells["layer"] == l, fine["layer"] == l
        layer_cells = {key: value[c] for key, value in cells.items()}
        layer_fine = {key: value[f] for key, value in fine.items()}
        coarse = batch["coarse"][l]
        assert coarse.shape == (24, n_eta, n_phi) and coarse.dtype == np.float32
        np.testing.assert_array_equal(coarse, scattered(layer_cells, cell_event[c], "energy", (24, n_eta, n_phi)))
        for key, field in (("fine", "energy"), ("fine_neutral", "energy_neutral")):
            np.testing.assert_array_equal(batch[key][:, l], scattered(layer_fine, fine_event[f], field, (24, 64, 64)))
        # The fine truth summed over each detector cell is that cell's truth, before noise
        # (and its sampling smearing); the measured fine energies differ from the readout by the noise.
        stored = coarse != 0
        truth = scattered(layer_fine, fine_event[f], "energy_charged", (24, 64, 64)) + batch["fine_neutral"][:, l]
        cell_truth = scattered(layer_cells, cell_event[c], "energy_charged", (24, n_eta, n_phi)) + scattered(
            layer_cells, cell_event[c], "energy_neutral", (24, n_eta, n_phi))
        np.testing.assert_allclose(to_coarse(torch.from_numpy(truth), FACTORS[l]).numpy()[stored],
                                   cell_truth[stored], rtol=1e-4, atol=1e-5)
        measured = to_coarse(torch.from_numpy(batch["fine"][:, l]), FACTORS[l]).numpy()
        assert np.all(np.abs(measured - coarse)[stored] < 5 * geometry.layers[l].noise)
    # The readout keeps its noise: topo-cluster cells of either sign.
    assert min(image.min() for image in batch["coarse"]) < 0
    events = arrays["events"]
    for key in EVALUATION_FIELDS:
        np.testing.assert_array_equal(batch["events"][key], events[key])
    has = events["has_track"] == 1
    assert has.sum() > 12
    np.testing.assert_allclose(batch["track"].reshape(24, -1).max(axis=1)[has], events["track_p"][has], rtol=1e-6)
    assert np.all(batch["track"][~has] == 0) and np.all((batch["track"] != 0).sum(axis=(1, 2)) <= 1)
    plain = SuperResolutionBatches(files["pflow"], 10)[0]
    assert set(plain) == {"coarse", "track", "fine", "row"}


def test_noise_free_fine_cells_sum_to_the_readout(files):
    """Without noise every deposit seeds a topo-cluster: the fine images summed over each
    detector cell (of OTHER_GRANULARITY, em2 4 x 2 fine cells a cell) are the readout."""
    batches = SuperResolutionBatches(files["quiet"], 16)
    assert batches.shapes == [tuple(s) for s in OTHER_GRANULARITY] and batches.factors[1] == (4, 2)
    batch = all_batches(batches)
    for l, factors in enumerate(batches.factors):
        summed = to_coarse(torch.from_numpy(batch["fine"][:, l]), factors).numpy()
        np.testing.assert_allclose(summed, batch["coarse"][l], rtol=1e-5, atol=1e-5)
        assert (batch["coarse"][l] != 0).sum() > 24
    assert sum(image.sum() for image in batch["coarse"]) == pytest.approx(batch["fine"].sum(), rel=1e-5)


def test_sub_pixel_rearrangement():
    torch.manual_seed(0)
    for r in (2, 4, 8):
        x = torch.randn(2, 3 * r * r, 5, 4)
        torch.testing.assert_close(sub_pixel(x, (r, r)), torch.nn.PixelShuffle(r)(x), rtol=0, atol=0)
    # Sub-pixel channel c fe fp + u fp + v goes to fine cell (I fe + u, J fp + v) of map c.
    for fe, fp in ((1, 2), (2, 4), (4, 1)):
        x = torch.arange(2 * 3 * fe * fp * 5 * 4, dtype=torch.float32).reshape(2, 3 * fe * fp, 5, 4)
        out = sub_pixel(x, (fe, fp))
        assert out.shape == (2, 3, 5 * fe, 4 * fp)
        for c in range(3):
            for u in range(fe):
                for v in range(fp):
                    torch.testing.assert_close(out[:, c, u::fe, v::fp], x[:, c * fe * fp + u * fp + v])
    # em1's (1, 2): channel 0 the left, channel 1 the right fine cell of each detector cell.
    x = torch.tensor([[[[1.0, 2.0]], [[10.0, 20.0]]]])  # (1, 2, 1, 2)
    torch.testing.assert_close(sub_pixel(x, (1, 2)), torch.tensor([[[[1.0, 10.0, 2.0, 20.0]]]]))
    energy = torch.randn(3, 8, 16)
    torch.testing.assert_close(to_coarse(to_fine(energy, (8, 4)), (8, 4)), energy)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_energy_sharing_conserves_every_cell(dtype, tolerance):
    generator = torch.Generator().manual_seed(3)
    sharing = EnergySharing(FACTORS)
    logits = 8 * torch.randn(5, 6, 64, 64, generator=generator, dtype=dtype)
    coarse = [torch.randn(5, h, w, generator=generator, dtype=dtype) * 10 for h, w in SHAPES]
    coarse[0][0] = 0  # an empty event
    out = sharing(logits, coarse)
    assert out.shape == (5, 6, 64, 64) and out.dtype == dtype
    for l, factors in enumerate(FACTORS):
        torch.testing.assert_close(to_coarse(out[:, l], factors), coarse[l], rtol=tolerance, atol=tolerance * 10)
        # Every share has its cell's sign: negative cells are shared out as negative energy.
        uniform = to_fine(coarse[l], factors)
        assert torch.all(torch.sign(out[:, l]) == torch.sign(uniform))
        assert not torch.allclose(out[:, l], uniform)
    # Equal logits share evenly.
    torch.testing.assert_close(sharing(torch.zeros_like(logits), coarse)[:, 2], to_fine(coarse[2], FACTORS[2]))


def random_inputs(n: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Sparse random layer images (5 % of cells 0.1-5 GeV, a tenth of them slightly negative) and a track pixel."""
    generator = torch.Generator().manual_seed(seed)
    coarse = []
    for h, w in SHAPES:
        energy = torch.rand(n, h, w, generator=generator) * 4.9 + 0.1
        energy = torch.where(torch.rand(n, h, w, generator=generator) < 0.1, -0.02 * energy, energy)
        coarse.append(torch.where(torch.rand(n, h, w, generator=generator) < 0.05, energy, torch.zeros(())))
    track = torch.zeros(n, 64, 64)
    track[torch.arange(n), torch.randint(0, 64, (n,), generator=generator),
          torch.randint(0, 64, (n,), generator=generator)] = 10.0
    return coarse, track


def test_trunk_is_the_concatenation_then_the_1x1_merge():
    """The trunk's folded merge is the module docstring's: every layer's 3x3 conv,
    sub-pixel maps, a(E) of the track, concatenated, then the 1x1 conv; gradients too."""

    coarse, track = random_inputs(2, seed=7)
    torch.manual_seed(2)
    trunk = build_network("cnn", SHAPES, 64, NETWORK).trunk
    for parameter in trunk.parameters():  # away from the zero-ish start, every block matters
        torch.nn.init.normal_(parameter, std=0.3)
    maps = [sub_pixel(conv(signed_log(e, trunk.energy_scale)[:, None]), f)
            for conv, e, f in zip(trunk.upsample, coarse, trunk.factors)]
    concatenated = torch.cat(maps + [signed_log(track, trunk.energy_scale)[:, None]], dim=1)
    assert concatenated.shape[1] == 6 * trunk.channels + 1
    expected, got = trunk.blocks(trunk.merge(concatenated)), trunk(coarse, track)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    weights = torch.randn_like(got)
    parameters = list(trunk.parameters())
    for a, b in zip(torch.autograd.grad((got * weights).sum(), parameters),
                    torch.autograd.grad((expected * weights).sum(), parameters)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_networks_shapes_start_and_conservation():
    coarse, track = random_inputs(3, seed=5)
    interpolated = torch.stack([bicubic(e, f) for e, f in zip(coarse, FACTORS)], dim=1)
    for method, tolerance in (("redistribute", 2e-3), ("cnn", 1e-6)):
        torch.manual_seed(1)
        network = build_network(method, SHAPES, 64, NETWORK)
        with torch.no_grad():
            out = network(coarse, track)
            assert out.shape == (3, 6, 64, 64)
            # The zero head: an untrained network is the bicubic interpolation (redistribute's
            # shares mixed with 0.1 % of the uniform ones: every fine cell within 0.2 % of its cell's energy).
            cells = torch.stack([to_fine(e.abs(), f) * f[0] * f[1] for e, f in zip(coarse, FACTORS)], dim=1)
            assert torch.all((out - interpolated).abs() <= tolerance * cells + 1e-7), method
            assert not torch.allclose(out, torch.stack([to_fine(e, f) for e, f in zip(coarse, FACTORS)], dim=1))
            torch.nn.init.normal_(network.head.weight, std=0.5)
            out = network(coarse, track)
        assert not torch.allclose(out, interpolated, atol=1e-3)
        sums = [to_coarse(out[:, l], f) for l, f in enumerate(FACTORS)]
        conserved = all(torch.allclose(s, e, rtol=1e-5, atol=1e-5) for s, e in zip(sums, coarse))
        assert conserved == (method == "redistribute"), method
    with pytest.raises(ValueError, match="5 layer images, expected 6"):
        network(coarse[:5], track)
    with pytest.raises(ValueError, match=r"layer 1: image of shape \(3, 64, 64\), expected \(3, 32, 32\)"):
        network([coarse[0], torch.zeros(3, 64, 64), *coarse[2:]], track)
    with pytest.raises(ValueError, match="unknown learned super-resolution method 'unet'"):
        build_network("unet", SHAPES, 64, NETWORK)
    with pytest.raises(ValueError, match=r"unknown super-resolution network settings \['depth'\]"):
        build_network("cnn", SHAPES, 64, {**NETWORK, "depth": 3})
    with pytest.raises(ValueError, match=r"super-resolution network settings: missing \['energy_scale'\]"):
        build_network("cnn", SHAPES, 64, TINY)


def test_loss_weighs_every_layer_by_its_scale(tmp_path, files):
    target = torch.zeros(2, 3, 4, 4)
    target[:, 0] = 2.0
    target[:, 1, 0, 0] = 4.0
    predicted = target.clone()
    predicted[:, 0] += 0.2  # error 0.04 GeV^2 in every cell
    predicted[:, 1, 0, 0] = 0.0  # error 16 GeV^2 in one of 16 cells: 1 GeV^2
    scales = torch.tensor([4.0, 1.0, 0.5])
    assert fine_mse(predicted, target, scales).item() == pytest.approx((0.04 / 4 + 1.0 / 1.0 + 0) / 3)
    assert fine_mse(predicted, target, torch.ones(3)).item() == pytest.approx(((predicted - target) ** 2).mean().item())
    # Per event (both alike): layer 1's error relative to the event's own mean square, 1 GeV^2 (all of it
    # lost), plus S_1 / 100; layer 0 0.04 / (4 + 0.04); the empty layer 2 0.
    event = (0.04 / (4 + 0.04) + 1.0 / (1.0 + 0.01) + 0) / 3
    assert event_relative_mse(predicted, target, scales).item() == pytest.approx(event)
    assert fine_loss(predicted, target, scales).item() == pytest.approx(
        0.5 * (fine_mse(predicted, target, scales).item() + event))
    # The scales of a file: its fine truth's mean square per layer, from the dense images.
    dense = np.concatenate([b["fine"] for b in SuperResolutionBatches(files["pi0"], 5)]).astype(np.float64)
    np.testing.assert_allclose(fine_mean_squares([files["pi0"]] * 2, 6, 64), (dense**2).mean(axis=(0, 2, 3)),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="loss_scales .* expected one positive number"):
        SuperResolutionModule("cnn", SHAPES, 64, NETWORK, loss_scales=[1.0, 0.0, 1, 1, 1, 1], **default_optimiser())


@pytest.mark.parametrize("method", ["redistribute", "cnn"])
def test_loss_goes_down_on_one_batch(files, method):
    torch.manual_seed(0)
    batch = SuperResolutionDataset(files["pflow"], 12)[0]
    scales = batch["fine"].double().square().mean(dim=(0, 2, 3)).clamp(min=1e-8)
    module = SuperResolutionModule(method, SHAPES, 64, NETWORK, loss_scales=scales.tolist(), **default_optimiser())
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = fine_loss(module.fine_images(batch), batch["fine"], module.loss_scales)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses  # from the bicubic start
    if method == "redistribute":
        with torch.no_grad():
            out = module.fine_images(batch)
        for l, f in enumerate(FACTORS):
            torch.testing.assert_close(to_coarse(out[:, l], f), batch["coarse"][l], rtol=1e-5, atol=1e-5)


def test_data_module_concatenates_and_shuffles_the_files(files):
    data = SuperResolutionDataModule({"train": [files["pflow"], files["pi0"]], "val": [files["pi0"]]}, 16, seed=3)
    data.setup("fit")
    assert len(data.datasets["train"]) == 2 + 3 and len(data.datasets["val"]) == 3
    sampler = data.train_sampler(data.datasets["train"])
    orders = [sampler.order(epoch) for epoch in range(4)]
    assert all(sorted(order) == list(range(5)) for order in orders) and len({tuple(o) for o in orders}) > 1
    assert orders == [data.train_sampler(data.datasets["train"]).order(epoch) for epoch in range(4)]
    events = sum(len(batch["row"]) for batch in data.train_dataloader())
    assert events == 24 + 40
    with pytest.raises(ValueError, match="no particle_flow_images file for splits \\['val'\\]"):
        SuperResolutionDataModule({"train": [files["pflow"]]})
    mixed = SuperResolutionDataModule({"train": [files["pflow"]], "val": [files["quiet"]]}, 16)
    with pytest.raises(ValueError, match=r"quiet\.h5: layer shapes .* expected files of one detector"):
        mixed.setup("fit")


def test_training_writes_a_checkpoint_that_rebuilds_the_module(files, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pipeline.ml.checkpoints import checkpoint_run_id
    from pipeline.ml.tracking import tracking_uri
    from pipeline.studies.super_resolution import train

    built = []

    def build_and_keep(config, method, loss_scales):
        built.append(build_model(config, method, loss_scales))
        return built[-1]

    build_model = train.build_model
    monkeypatch.setattr(train, "build_model", build_and_keep)
    # MLflow puts a SQLite store's artifacts under the working directory: keep them in tmp_path.
    monkeypatch.chdir(tmp_path)
    config = files["config"]
    data = {"train": [files["pflow"], files["pi0"]], "val": [files["pi0"]]}
    checkpoint, history = tmp_path / "redistribute.ckpt", tmp_path / "redistribute.csv"
    assert not torch.are_deterministic_algorithms_enabled()
    final = train.train_super_resolution(config, "redistribute", data, checkpoint, history, progress=False)
    assert final["val_loss"] > 0 and math.isfinite(final["val_loss"])
    # The training ran deterministic (training.deterministic) and left the process as it found it.
    assert not torch.are_deterministic_algorithms_enabled()
    with open(history, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["val_loss"]) == pytest.approx(final["val_loss"])
    run = MlflowClient(tracking_uri(config["mlflow"])).get_run(checkpoint_run_id(checkpoint))
    assert run.info.run_name == "super_resolution.train.redistribute"
    restored = load_module(SuperResolutionModule, checkpoint)
    assert restored.hparams.method == "redistribute" and restored.hparams.fine == 64
    assert restored.hparams.settings == NETWORK
    assert restored.hparams.layer_shapes == [list(s) for s in SHAPES]
    np.testing.assert_allclose(restored.hparams.loss_scales, fine_mean_squares(data["train"], 6, 64))
    (trained,) = built
    trained.eval()
    restored.eval()
    # The evaluation's batches: NumPy straight from SuperResolutionBatches, or the tensors of the dataset.
    batch = SuperResolutionBatches(files["pflow"], 8, evaluation=True)[1]
    with torch.no_grad():
        expected = trained.fine_images(SuperResolutionDataset(files["pflow"], 8, evaluation=True)[1])
        predicted = restored.fine_images(batch)
    torch.testing.assert_close(predicted, expected)
    interpolated = torch.stack([bicubic(torch.from_numpy(e), f) for e, f in zip(batch["coarse"], FACTORS)], dim=1)
    assert not torch.allclose(predicted, interpolated, atol=1e-4)  # trained: no longer the bicubic interpolation
    # Files of another detector are refused before any training, naming the file.
    with pytest.raises(ValueError, match=r"quiet\.h5: written for layer shapes .* rebuild the file"):
        train.train_super_resolution(config, "cnn", {"train": [files["quiet"]], "val": [files["pi0"]]},
                                     tmp_path / "x.ckpt", tmp_path / "x.csv", progress=False)
    with pytest.raises(ValueError, match=r"no particle_flow_images file for \['val'\]"):
        train.train_super_resolution(config, "cnn", {"train": [files["pi0"]], "val": []}, tmp_path / "x.ckpt",
                                     tmp_path / "x.csv", progress=False)
