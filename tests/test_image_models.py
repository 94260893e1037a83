"""The jet-image study's models: metrics, noise, streaming, training and evaluation on
small synthetic jet images (top-like: three blobs; QCD-like: one blob)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from default_config import default_optimiser
from sklearn.metrics import accuracy_score, roc_auc_score

from pipeline.config import config_hash
from pipeline.io.hdf5 import RaggedWriter, provenance_attrs
from pipeline.run_config import resolve_config
from pipeline.studies.jet_images.data import (
    NOISE_BLOCK,
    JetImageDataModule,
    add_noise,
    iterate_images,
    row_noise,
)
from pipeline.studies.jet_images.formats import jet_images_schema
from pipeline.studies.jet_images.metrics import mse, psnr, tagger_metrics
from pipeline.studies.jet_images.models import ImageAutoencoder, ImageTagger
from pipeline.tiny import tiny_config

PIXELS = 16
NOISE = {"noise_sigma": 1.0, "pileup_deposits": 10.0, "pileup_energy": 2.0}
#: The test study's noise: stronger than the default, so that a denoiser trained for a
#: few seconds beats the noisy images by a clear margin.
STRONG_NOISE = {"noise_sigma": 4.0, "pileup_deposits": 10.0, "pileup_energy": 5.0}
#: Epochs of the denoiser in the tests (the other models train for two).
DENOISER_EPOCHS = 6


def synthetic_jets(n: int, seed: int) -> dict[str, np.ndarray]:
    """jet_images rows of n jets, half top: a core blob of ~300 GeV E_T, and for top jets
    two more prongs 3-6 pixels away carrying 20-40 % each (Gaussian blobs, sigma 0.8 pixel)."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int8)
    centre = PIXELS / 2 - 0.5
    radius, angle = rng.uniform(3, 6, (n, 3)), rng.uniform(0, 2 * np.pi, (n, 3))
    x = centre + np.where(np.arange(3) == 0, 0.0, radius * np.cos(angle))
    y = centre + np.where(np.arange(3) == 0, 0.0, radius * np.sin(angle))
    energy = 300.0 * np.c_[np.ones(n), rng.uniform(0.2, 0.4, (n, 2)) * label[:, None]]
    grid = np.arange(PIXELS)
    gx = np.exp(-((grid[None, None, :] - x[:, :, None]) ** 2) / (2 * 0.8**2))
    gy = np.exp(-((grid[None, None, :] - y[:, :, None]) ** 2) / (2 * 0.8**2))
    images = np.einsum("np,npi,npj->nij", energy / (2 * np.pi * 0.8**2), gx, gy)
    return {"pt": rng.uniform(400, 600, n), "eta": rng.uniform(-2, 2, n), "phi": rng.uniform(-3, 3, n),
            "mass": np.where(label == 1, 175.0, 50.0), "label": label, "event": np.arange(n), "shard": np.zeros(n),
            "image": images.astype(np.float32)}


def write_images(path, n: int, seed: int, pixels: int = PIXELS):
    jets = synthetic_jets(n, seed)
    if pixels != PIXELS:
        jets["image"] = np.zeros((n, pixels, pixels), np.float32)
    config = {"seed": seed}
    attrs = {**provenance_attrs(config, config_hash(config), seed), "pixels": pixels, "pixel_size": 0.1,
             "n_events": n}
    with RaggedWriter(path, jet_images_schema(pixels), attrs) as writer:
        writer.append({"jets": jets})
    return path


def image_config(tmp_path) -> dict:
    config = tiny_config()
    config["jet_images"] = {
        "signal": "top", "background": "qcd", "pixels": PIXELS, "pixel_size": 0.1,
        "preprocessing": {"centre": True, "rotate": True, "flip": True}, "normalise": True,
        "mlp": {"widths": [32, 16], "dropout": 0.1},
        "cnn": {"channels": [4, 8], "dense": 16, "dropout": 0.1},
        "autoencoder": {"channels": [4, 8], "latent": 8},
        "denoising": dict(STRONG_NOISE),
        "training": {"batch_size": 32},  # the study's override of the training section
    }
    config["training"].update(max_epochs=2, batch_size=256, threads=1)
    config["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    config["training"]["resume_dir"] = str(tmp_path / "resume")
    return resolve_config(config, source="test_image_models")  # the keys are the schema's


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("jet_images")
    return {split: write_images(directory / f"{split}.h5", n, seed)
            for split, n, seed in (("train", 480, 1), ("val", 160, 2), ("test", 240, 3))}


# --- metrics -----------------------------------------------------------------------------


def test_auc_and_accuracy_agree_with_scikit_learn_also_with_tied_scores():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) * 0.6 + 0.4 * labels, 1)  # rounded: many ties
    metrics = tagger_metrics(labels, scores)
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, scores >= 0.5))


def test_rejection_at_fixed_signal_efficiency_on_a_hand_made_case():
    signal = np.linspace(0.1, 1.0, 10)  # eps_S = 0.3 at the cut 0.8, 0.5 at the cut 0.6
    background = np.r_[np.full(4, 0.85), np.full(10, 0.65), np.full(86, 0.05)]
    labels = np.r_[np.ones(10), np.zeros(100)]
    metrics = tagger_metrics(labels, np.r_[signal, background])
    assert metrics["rejection_at_0.3"] == pytest.approx(100 / 4)
    assert metrics["rejection_at_0.5"] == pytest.approx(100 / 14)


def test_anomaly_accuracy_is_the_best_cut_and_a_useless_score_gets_the_majority_fraction():
    labels = np.array([1, 1, 0, 0, 0])
    good = tagger_metrics(labels, np.array([0.9, 0.5, 0.3, 0.1, 0.6]), threshold=None)
    assert good["accuracy"] == pytest.approx(0.8)  # cut at 0.9: one signal in, all background out
    inverted = tagger_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9, 0.7]), threshold=None)
    assert inverted["auc"] == 0.0
    assert inverted["accuracy"] == pytest.approx(0.6)  # nothing passes: the three background jets right


def test_mse_and_psnr_by_hand():
    reference = np.array([[[1.0, 0.0], [0.0, 0.0]], [[2.0, 2.0], [0.0, 0.0]]])
    images = reference.copy()
    images[0, 1, 1] = 1.0
    assert mse(reference, images) == pytest.approx([0.25, 0.0])
    values = psnr(reference, images)
    assert values[0] == pytest.approx(10 * math.log10(1.0 / 0.25))
    assert values[1] == math.inf
    with pytest.raises(ValueError, match="differ in shape"):
        mse(reference, images[:, :1])


# --- noise and streaming ------------------------------------------------------------------


def test_add_noise_has_the_configured_statistics_and_is_reproducible():
    images = np.zeros((4000, 8, 8), np.float32)
    pileup = add_noise(images, np.random.default_rng(1), 0.0, 4.0, 3.0)
    assert not images.any()  # the input is untouched
    # Poisson(4) deposits at uniform pixels of 64: expected distinct pixels 64 (1 - exp(-4/64)).
    assert (pileup > 0).sum(axis=(1, 2)).mean() == pytest.approx(64 * (1 - math.exp(-4 / 64)), abs=0.15)
    assert pileup.sum(axis=(1, 2)).mean() == pytest.approx(4 * 3.0, abs=0.8)
    gaussian = add_noise(images, np.random.default_rng(1), 1.5, 0.0, 3.0)
    assert gaussian.std() == pytest.approx(1.5, rel=0.01)
    assert abs(gaussian.mean()) < 0.01
    again = add_noise(images, np.random.default_rng(1), 1.5, 4.0, 3.0)
    assert np.array_equal(again, add_noise(images, np.random.default_rng(1), 1.5, 4.0, 3.0))
    assert not np.array_equal(again, add_noise(images, np.random.default_rng(2), 1.5, 4.0, 3.0))


def test_noise_of_a_row_does_not_depend_on_the_slice_it_is_read_in():
    whole = row_noise(0, 3 * NOISE_BLOCK, 4, NOISE, seed=9)
    assert np.array_equal(row_noise(100, 2 * NOISE_BLOCK + 7, 4, NOISE, seed=9), whole[100 : 2 * NOISE_BLOCK + 7])
    assert not np.array_equal(row_noise(0, 10, 4, NOISE, seed=9, epoch=1), whole[:10])
    assert not np.array_equal(row_noise(0, 10, 4, NOISE, seed=10), whole[:10])


def rows_of(loader) -> list[np.ndarray]:
    return [batch["row"].numpy() for batch in loader]


def test_every_row_is_streamed_once_per_epoch_in_a_seeded_order(files):
    def module():
        data = JetImageDataModule({"train": files["train"], "val": files["val"]}, PIXELS, batch_size=50, seed=3,
                                  name="cnn")
        data.setup()
        return data

    data = module()
    loader = data.train_dataloader()
    first, second = rows_of(loader), rows_of(loader)
    assert np.array_equal(np.sort(np.concatenate(first)), np.arange(480))
    assert np.array_equal(np.sort(np.concatenate(second)), np.arange(480))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))  # reshuffled every epoch
    rerun = module().train_dataloader()
    assert all(np.array_equal(a, b) for a, b in zip(first + second, rows_of(rerun) + rows_of(rerun)))
    val = np.concatenate(rows_of(data.val_dataloader()))
    assert np.array_equal(val, np.arange(160))  # in file order
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (50, PIXELS, PIXELS)
    assert torch.allclose(batch["image"].sum(dim=(1, 2)), torch.ones(50), atol=1e-5)  # normalised


@pytest.mark.parametrize("select", [0, 1])
def test_class_selection_streams_exactly_the_jets_of_one_class_in_full_batches(files, select):
    data = JetImageDataModule({"train": files["train"], "val": files["val"]}, PIXELS, batch_size=32, seed=3,
                              select=select)
    data.setup()
    batches = list(data.train_dataloader())
    labels = synthetic_jets(480, 1)["label"]
    expected = np.flatnonzero(labels == select)
    rows = np.concatenate([b["row"].numpy() for b in batches])
    assert np.array_equal(np.sort(rows), expected)
    assert all((b["label"].numpy() == select).all() for b in batches)
    sizes = sorted(len(b["row"]) for b in batches)
    assert sizes[1:] == [32] * (len(batches) - 1) and sizes[0] == len(expected) - 32 * (len(batches) - 1)


def test_noisy_batches_carry_the_clean_target_and_the_same_noise_on_every_pass(files):
    paths = {"train": files["train"], "val": files["val"], "test": files["test"]}
    data = JetImageDataModule(paths, PIXELS, batch_size=64, seed=3, noise=NOISE)
    data.setup()
    one, two = list(data.val_dataloader()), list(data.val_dataloader())
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(one, two))
    clean = next(iterate_images(files["val"], PIXELS))
    assert np.allclose(one[0]["target"].numpy(), clean["image"][:64])
    assert not np.allclose(one[0]["image"].numpy(), clean["image"][:64], atol=1e-3)
    train = data.train_dataloader()
    first = {int(b["row"][0]): b["image"] for b in train}
    second = {int(b["row"][0]): b["image"] for b in train}
    assert not torch.equal(first[0], second[0])  # training noise is redrawn every epoch
    # The evaluation's reader gives the very noisy test images the data module gives, whatever the chunking.
    tested = np.concatenate([b["image"].numpy() for b in data.test_dataloader()])
    streamed = np.concatenate([c["image"] for c in iterate_images(files["test"], PIXELS, noise=NOISE, seed=3,
                                                                  rows=100)])
    assert np.array_equal(tested, streamed)


def test_a_file_of_another_image_size_is_refused_with_its_name(tmp_path):
    path = write_images(tmp_path / "small.h5", 10, 1, pixels=8)
    with pytest.raises(ValueError, match="small.h5: images of 8 x 8 pixels, but jet_images.pixels is 16"):
        next(iterate_images(path, PIXELS))


# --- networks ------------------------------------------------------------------------------


@pytest.mark.parametrize("pixels", [16, 10])
def test_autoencoder_reconstructs_images_of_the_input_size_normalised(pixels):
    torch.manual_seed(0)
    model = ImageAutoencoder(pixels, channels=(4, 8), latent=5, normalised=True, input_scale=pixels**2, **default_optimiser()).eval()
    images = torch.rand(3, pixels, pixels)
    with torch.no_grad():
        out = model(images)
        error = model.reconstruction_error(images)
    assert out.shape == (3, pixels, pixels)
    assert torch.allclose(out.sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    # The error is in units of the scaled input (pixels^2 x the normalised image).
    assert torch.allclose(error, pixels**4 * ((out - images) ** 2).mean(dim=(1, 2)))


def test_tagger_backbones_give_one_logit_per_image_and_bad_settings_are_named():
    images = torch.rand(4, PIXELS, PIXELS)
    for backbone in ("mlp", "cnn"):
        assert ImageTagger(PIXELS, backbone, widths=(8,), channels=(4, 4), dense=8, dropout=0.1, **default_optimiser())(images).shape == (4,)
    with pytest.raises(ValueError, match="unknown image-tagger backbone 'rnn'"):
        ImageTagger(PIXELS, "rnn", dropout=0.1, **default_optimiser())
    with pytest.raises(ValueError, match=r"the cnn backbone needs \['dense'\]"):
        ImageTagger(PIXELS, "cnn", channels=(4, 4), dropout=0.1, **default_optimiser())
    with pytest.raises(ValueError, match="5 convolution blocks .* at least 32 pixels, got 16"):
        ImageTagger(PIXELS, "cnn", channels=(4, 4, 4, 4, 4), dense=8, dropout=0.1, **default_optimiser())


# --- training and evaluation ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, files) -> dict:
    """Every model of the study trained on the synthetic files: two epochs, the denoiser DENOISER_EPOCHS."""
    from pipeline.studies.jet_images.methods import METHODS as IMAGE_MODELS
    from pipeline.studies.jet_images.train import train_image_model

    directory = tmp_path_factory.mktemp("image_models")
    config = image_config(directory)
    out = {"config": config, "directory": directory, "checkpoints": {}, "final": {}}
    for name in IMAGE_MODELS:
        checkpoint, history = directory / f"{name}.ckpt", directory / f"{name}_history.csv"
        settings = config
        if name == "denoising_autoencoder":
            study = {**config["jet_images"], "training": {**config["jet_images"]["training"], "max_epochs": DENOISER_EPOCHS}}
            settings = {**config, "jet_images": study}
        out["final"][name] = train_image_model(settings, name, {"train": files["train"], "val": files["val"]},
                                               checkpoint, history, progress=False)
        out["checkpoints"][name] = checkpoint
    return out


def mlflow_runs(config) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(config["mlflow"]["tracking_uri"])
    experiment = client.get_experiment_by_name(config["mlflow"]["experiment"])
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}


def read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_training_writes_checkpoints_histories_and_mlflow_runs(trained):
    from pipeline.ml.checkpoints import checkpoint_run_id

    runs = mlflow_runs(trained["config"])
    for name, checkpoint in trained["checkpoints"].items():
        fields, epochs = read_csv(trained["directory"] / f"{name}_history.csv")
        epochs_run = DENOISER_EPOCHS if name == "denoising_autoencoder" else 2
        assert [row["epoch"] for row in epochs] == [str(e) for e in range(epochs_run)]
        assert "val_loss" in fields
        run = runs[f"jet_images.train.{name}"]
        assert run.info.run_id == checkpoint_run_id(checkpoint)
        assert run.data.tags["study"] == "jet_images" and run.data.tags["method"] == name
    assert runs["jet_images.train.autoencoder"].data.tags["trained_on"] == "qcd"
    assert runs["jet_images.train.autoencoder_inverse"].data.tags["trained_on"] == "top"
    assert runs["jet_images.train.cnn"].data.params["network.channels"] == "[4, 8]"
    assert runs["jet_images.train.cnn"].data.params["training.batch_size"] == "32"
    assert trained["final"]["cnn"]["val_auc"] > 0.8  # logged every epoch by the tagger


def test_taggers_separate_top_from_qcd_and_the_table_has_the_required_rows(trained, files, tmp_path):
    from pipeline.studies.jet_images.evaluate import evaluate_taggers

    checkpoints = {name: trained["checkpoints"][name] for name in ("mlp", "cnn")}
    rows = evaluate_taggers(trained["config"], files["test"], checkpoints, tmp_path)
    fields, table = read_csv(tmp_path / "taggers.csv")
    assert fields == ["model", "auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5"]
    assert [row["model"] for row in table] == ["mlp", "cnn"]
    for row in rows:
        assert row["auc"] > 0.8 and row["accuracy"] > 0.6
    # One table: our two rows (the CSV's numbers), then the landscape paper's two, each
    # labelled as theirs (Kasieczka et al., SciPost Phys. 7 (2019) 014, table: AUC,
    # accuracy, 1/eps_B at eps_S = 0.3; 0.5 is not quoted there).
    markdown = (tmp_path / "taggers.md").read_text()
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start:end]]
    assert cells[0] == ["model", "AUC", "accuracy", "1/eps_B @ eps_S=0.3", "1/eps_B @ eps_S=0.5"]
    assert len(cells) == 2 + 2 + 2  # header, separator, ours, theirs
    for row, ours in zip(rows, cells[2:4]):
        assert ours == [row["model"], f"{row['auc']:.3f}", f"{row['accuracy']:.3f}",
                        f"{row['rejection_at_0.3']:.1f}", f"{row['rejection_at_0.5']:.1f}"]
    assert cells[4:] == [
        ["TopoDNN (dense network) (landscape paper, theirs, on their data)", "0.972", "0.916", "295", "-"],
        ["CNN (landscape paper, theirs, on their data)", "0.981", "0.930", "914", "-"],
    ]
    assert "Kasieczka et al., SciPost Phys. 7 (2019) 014" in markdown
    assert all((tmp_path / f"roc.{ext}").stat().st_size > 0 for ext in ("png", "pdf"))
    run = mlflow_runs(trained["config"])["jet_images.evaluate.cnn"]
    assert run.data.metrics["auc"] == pytest.approx(rows[1]["auc"])
    assert run.data.tags["training.run_id"] == mlflow_runs(trained["config"])["jet_images.train.cnn"].info.run_id
    with pytest.raises(ValueError, match=r"cnn\.ckpt: holds the jet_images study's 'cnn' model, but was given as "
                                         r"the jet_images study's 'mlp' model"):
        evaluate_taggers(trained["config"], files["test"], {"mlp": checkpoints["cnn"], "cnn": checkpoints["cnn"]},
                         tmp_path)


def test_autoencoder_evaluation_writes_both_rows_and_the_figures(trained, files, tmp_path):
    from pipeline.studies.jet_images.evaluate import evaluate_autoencoders

    checkpoints = {name: trained["checkpoints"][name] for name in ("autoencoder", "autoencoder_inverse")}
    rows = evaluate_autoencoders(trained["config"], files["test"], checkpoints, tmp_path)
    fields, table = read_csv(tmp_path / "autoencoder.csv")
    assert fields == ["model", "auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5"]
    assert [row["model"] for row in table] == ["autoencoder", "autoencoder_inverse"]
    assert all(0.0 <= row["auc"] <= 1.0 for row in rows)
    markdown = (tmp_path / "autoencoder.md").read_text()
    assert f"AUC {rows[1]['auc']:.3f}" in markdown and "The inverse task" in markdown
    for stem in ("autoencoder_roc", "reconstruction"):
        assert all((tmp_path / f"{stem}.{ext}").stat().st_size > 0 for ext in ("png", "pdf"))
    run = mlflow_runs(trained["config"])["jet_images.evaluate.autoencoder_inverse"]
    assert run.data.tags["anomaly"] == "qcd"
    with pytest.raises(ValueError, match="missing \\['autoencoder_inverse'\\]"):
        evaluate_autoencoders(trained["config"], files["test"], {"autoencoder": checkpoints["autoencoder"]}, tmp_path)


def test_denoising_evaluation_compares_clean_noisy_and_denoised_images(trained, files, tmp_path):
    from pipeline.studies.jet_images.evaluate import evaluate_denoising

    checkpoints = {name: trained["checkpoints"][name] for name in ("denoising_autoencoder", "cnn")}
    rows = evaluate_denoising(trained["config"], files["test"], checkpoints, tmp_path)
    fields, table = read_csv(tmp_path / "denoising.csv")
    assert fields == ["images", "mse", "psnr", "cnn_auc"]
    assert [row["images"] for row in table] == ["clean", "noisy", "denoised"]
    clean, noisy, denoised = rows
    assert clean["mse"] == 0.0 and clean["psnr"] == math.inf and table[0]["psnr"] == "inf"
    assert noisy["mse"] > 0 and math.isfinite(noisy["psnr"])
    assert clean["cnn_auc"] > 0.8
    assert denoised["mse"] < 0.5 * noisy["mse"] and denoised["psnr"] > noisy["psnr"]
    assert all((tmp_path / f"denoising.{ext}").stat().st_size > 0 for ext in ("png", "pdf"))
    run = mlflow_runs(trained["config"])["jet_images.evaluate.denoising_autoencoder"]
    assert run.data.metrics["mse_noisy"] == pytest.approx(noisy["mse"])
    # A rerun sees the same noisy test images.
    again = evaluate_denoising(trained["config"], files["test"], checkpoints, tmp_path / "again")
    assert again[1]["mse"] == noisy["mse"] and again[2]["cnn_auc"] == denoised["cnn_auc"]


def test_unknown_model_names_are_refused(files, tmp_path):
    from pipeline.studies.jet_images.train import train_image_model

    with pytest.raises(ValueError, match="unknown jet-image model 'vae'"):
        train_image_model(image_config(tmp_path), "vae", files, tmp_path / "x.ckpt", tmp_path / "x.csv")


def test_the_same_config_trains_the_same_network(files, tmp_path):
    from pipeline.studies.jet_images.train import train_image_model

    config = image_config(tmp_path)
    config["training"]["max_epochs"] = 1
    data = {"train": files["train"], "val": files["val"]}
    weights = []
    for run in ("a", "b"):
        train_image_model(config, "denoising_autoencoder", data, tmp_path / f"{run}.ckpt", tmp_path / f"{run}.csv",
                          progress=False)
        weights.append(torch.load(tmp_path / f"{run}.ckpt", weights_only=False)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
