"""The papers' public data sets as inputs (``pipeline.datasets``): the Top Quark Tagging
Reference Dataset's HDFStores and the Set2Graph jets' ROOT files, written here in the
authors' layouts (pandas, uproot), read back, refused when wrong, and converted into the
studies' own files."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
import torch
import uproot

from pipeline.config_schema import ConfigError
from pipeline.datasets import check_sources, describe, source_files
from pipeline.datasets.set2graph import Set2GraphFile, decreasing_pt_order, first_appearance_labels
from pipeline.datasets.top_tagging import TopTaggingFile
from pipeline.io.hdf5 import RaggedReader, data_set_of
from pipeline.ml.checkpoints import load_checkpoint
from pipeline.partition import all_pairs
from pipeline.run_config import resolve_config
from pipeline.studies.jet_images.formats import jet_images_schema
from pipeline.studies.jet_images.reference import constituent_images, convert_top_tagging
from pipeline.studies.vertexing.features import build_track_graphs
from pipeline.studies.vertexing.formats import TRACK_GRAPHS
from pipeline.tiny import top_tagging_frame, write_set2graph_files, write_top_tagging_files

SPLITS = ("train", "val", "test")


def reference_config(tmp_path, top=None, s2g=None, **sections) -> dict:
    """A resolved config reading the given public-data directories."""
    samples = {}
    if top is not None:
        samples["toptag"] = {"source": {"format": "top_tagging", "path": str(top)}}
        sections.setdefault("jet_images", {"signal": "toptag", "background": "toptag"})
    if s2g is not None:
        samples["s2g"] = {"source": {"format": "set2graph", "path": str(s2g)}}
    return resolve_config({"samples": samples, **sections}, source="test")


# --- the top-tagging reference files ---------------------------------------------------


@pytest.mark.parametrize("layout", ["table", "fixed"])
def test_both_pandas_layouts_read_as_pandas_reads_them(tmp_path, layout):
    directory = write_top_tagging_files(tmp_path, {"train": 120}, seed=3, layout=layout)
    frame = pd.read_hdf(directory / "train.h5", "table")
    with TopTaggingFile(directory / "train.h5") as reader:
        assert (reader.n_jets, reader.n_constituents) == (120, 200)
        p4, label = reader.read(0, 120)
        chunks = [reader.read(start, start + 50) for start in (0, 50, 100)]
    for k, q in enumerate(("E", "PX", "PY", "PZ")):
        np.testing.assert_array_equal(p4[:, :, k], frame[[f"{q}_{i}" for i in range(200)]].to_numpy())
    np.testing.assert_array_equal(label, frame["is_signal_new"].to_numpy())
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), p4)  # chunks join up
    assert 0 < label.mean() < 1


def _write(path, frame, **options):
    frame.to_hdf(path, key=options.pop("key", "table"), format=options.pop("format", "table"), **options)
    return path


def _emptied(path):
    """The file with every row of its frame removed (pandas does not write an empty table)."""
    import tables

    with tables.open_file(path, "a") as f:
        if "/table/table" in f:
            f.get_node("/table/table").remove_rows(0)
        else:
            f.root.table.axis1._f_remove()
            for node in list(f.root.table):
                if node._v_name.endswith("_values"):
                    empty = node[:0]
                    name = node._v_name
                    node._f_remove()
                    f.create_array(f.root.table, name, empty)
            f.create_array(f.root.table, "axis1", np.zeros(0, np.int64))
    return path


@pytest.mark.parametrize("layout", ["table", "fixed"])
def test_a_wrong_top_tagging_file_is_refused_naming_the_file_and_the_key(tmp_path, layout):
    good = top_tagging_frame(10, seed=1)
    cases = {
        "no such file": (None, "no such file"),
        "other key": (lambda p: _write(p, good, key="jets", format=layout), "no key 'table'"),
        "missing column": (lambda p: _write(p, good.drop(columns=["PZ_7"]), format=layout), "no column PZ_7"),
        "no label": (lambda p: _write(p, good.drop(columns=["is_signal_new"]), format=layout),
                     "no column 'is_signal_new'"),
        "integer momenta": (lambda p: _write(p, good.astype({"E_3": "int64"}), format=layout),
                            "column 'E_3': dtype int64, expected floating point"),
        "empty": (lambda p: _emptied(_write(p, good, format=layout)), "holds no jets"),
        "text": (lambda p: p.write_text("E_0,PX_0\n1,2\n"), "not an HDF5 file"),
    }
    for name, (make, message) in cases.items():
        path = tmp_path / f"{name}.h5"
        if make:
            make(path)
        with pytest.raises(ValueError, match=message) as error:
            TopTaggingFile(path)
        assert str(path) in str(error.value), name
    bad_label = good.copy()
    bad_label.loc[4, "is_signal_new"] = 2
    with TopTaggingFile(_write(tmp_path / "label.h5", bad_label, format=layout)) as reader:
        with pytest.raises(ValueError, match=r"label.h5: key 'table', column 'is_signal_new': 2 in row 4"):
            reader.read(0, 10)


def test_constituent_images_by_hand():
    settings = resolve_config({"samples": {"t": {"process": "ttbar"}}})["jet_images"]
    settings = {**settings, "preprocessing": {"centre": False, "rotate": False, "flip": False}}
    # Two massless constituents of 300 and 100 GeV at eta 0.1 apart, phi 0.2 apart, and padding.
    pts, etas, phis = np.array([300.0, 100.0]), np.array([0.5, 0.6]), np.array([1.0, 1.2])
    p4 = np.zeros((1, 4, 4))
    p4[0, :2] = np.stack([pts * np.cosh(etas), pts * np.cos(phis), pts * np.sin(phis), pts * np.sinh(etas)], axis=1)
    jets = constituent_images(p4, settings)
    total = p4[0].sum(axis=0)
    assert jets["pt"][0] == pytest.approx(np.hypot(total[1], total[2]), rel=1e-6)
    # m^2 = 2 pT1 pT2 (cosh(d eta) - cos(d phi)) for two massless particles.
    assert jets["mass"][0] == pytest.approx(np.sqrt(2 * 300 * 100 * (np.cosh(0.1) - np.cos(0.2))), rel=1e-5)
    image = jets["image"][0]
    assert image.sum() == pytest.approx(400.0, rel=1e-6)  # both inside the 1.6-wide image
    # The axis is the pT-weighted sum's, near the harder particle: 300 GeV lies in the pixel
    # of its offset from it.
    size, pixels = settings["pixel_size"], settings["pixels"]
    dx = 0.5 - jets["eta"][0]
    dy = 1.0 - jets["phi"][0]
    assert image[int(np.floor(dx / size + pixels / 2)), int(np.floor(dy / size + pixels / 2))] == pytest.approx(300.0)


def test_top_tagging_files_become_the_studys_splits_reproducibly(tmp_path):
    directory = write_top_tagging_files(tmp_path / "top", {"train": 300, "val": 120, "test": 150}, seed=5)
    config = reference_config(tmp_path, top=directory)
    outputs = {split: tmp_path / "out" / f"{split}.h5" for split in SPLITS}
    counts = convert_top_tagging(config, outputs, progress=False)
    assert counts == {"train": 300, "val": 120, "test": 150}
    with RaggedReader(outputs["test"], jet_images_schema()) as reader:
        jets = reader.read("jets", None, 0, 150)
        assert reader.attrs["split"] == "test" and reader.attrs["pixels"] == 40
    # Every jet of the file once, its label with it (the rows are shuffled).
    labels = pd.read_hdf(directory / "test.h5", "table")["is_signal_new"].to_numpy()
    np.testing.assert_array_equal(np.sort(jets["event"]), np.arange(150))
    np.testing.assert_array_equal(jets["label"], labels[jets["event"]])
    assert not np.array_equal(jets["event"], np.arange(150))
    # Physics of the caricature: three-prong top jets are heavier than one-prong QCD jets;
    # the constituents' scalar pT sums to 550-650 GeV, most of it inside the 1.6-wide image.
    assert np.median(jets["mass"][jets["label"] == 1]) > 2 * np.median(jets["mass"][jets["label"] == 0])
    assert np.all(jets["pt"] <= 650.01)
    in_image = jets["image"].sum(axis=(1, 2))
    assert np.all(in_image <= 650.01) and np.median(in_image) > 540
    assert data_set_of(outputs["test"]) == describe(config, "toptag")
    assert "Top Quark Tagging Reference Dataset" in data_set_of(outputs["test"])
    again = {split: tmp_path / "again" / f"{split}.h5" for split in SPLITS}
    convert_top_tagging(config, again, progress=False)
    with RaggedReader(again["test"], jet_images_schema()) as reader:
        np.testing.assert_array_equal(reader.read("jets", None, 0, 150)["image"], jets["image"])


# --- the Set2Graph files -----------------------------------------------------------------


def _tree(path, branches, name="tree"):
    """Write ``branches`` ({name: flat array, or awkward jagged}) as a TTree."""
    import awkward as ak

    jagged = {k for k, v in branches.items() if isinstance(v, ak.Array) and v.ndim == 2}
    branches = {k: v if k in jagged else np.asarray(v) for k, v in branches.items()}
    with uproot.recreate(path) as f:
        tree = f.mktree(name, {k: f"var * {ak.to_numpy(ak.flatten(v)).dtype}" if k in jagged else v.dtype
                               for k, v in branches.items()})
        if len(next(iter(branches.values()))):
            tree.extend(branches)
    return path


def _branches(path):
    """Every branch of a Set2Graph file as written (jagged ones as awkward arrays)."""
    with uproot.open(path) as f:
        tree = f["tree"]
        return {name: tree[name].array(library="ak") for name in tree.keys() if not name.startswith("ntrk_")}


@pytest.fixture(scope="module")
def set2graph_files(tmp_path_factory, tiny_files):
    return write_set2graph_files(tmp_path_factory.mktemp("set2graph"), tiny_files["track_jets"], seed=2)


def _pairs(labels, offsets):
    """Same-vertex pairs of every jet, as a set of (jet, i, j) with i, j positions of tracks by pT."""
    i, j = all_pairs(offsets)
    jet = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets) * (np.diff(offsets) - 1) // 2)
    same = labels[i] == labels[j]
    return set(zip(jet[same], (i - offsets[jet])[same], (j - offsets[jet])[same]))


def test_set2graph_tracks_keep_their_labels_and_come_by_decreasing_pt(set2graph_files, track_data, tiny_config_session):
    resolution = tiny_config_session["tracker"]["resolution"]
    with Set2GraphFile(set2graph_files / "training_data.root") as reader:
        jets, tracks, offsets = reader.track_sets(0, reader.n_jets, resolution)
    # The first third of the simulated jets, tracks in our files' order (decreasing pT): the
    # same features and the same partition as the track_jets file they were written from.
    n = len(offsets) - 1
    truth, truth_offsets = track_data["arrays"]["tracks"], track_data["offsets"]["tracks"][: n + 1]
    rows = slice(0, truth_offsets[-1])
    np.testing.assert_allclose(tracks["pt"], truth["pt"][rows], rtol=1e-6)
    np.testing.assert_allclose(tracks["d0"], truth["d0"][rows], rtol=1e-6)
    np.testing.assert_allclose(tracks["theta"], truth["theta"][rows], rtol=1e-5)
    assert _pairs(tracks["vertex"], offsets) == _pairs(truth["vertex"][rows], truth_offsets)
    np.testing.assert_array_equal(jets["flavour"], track_data["arrays"]["jets"]["flavour"][:n])
    assert np.all(np.diff(tracks["pt"])[np.diff(np.repeat(np.arange(n), np.diff(offsets))) == 0] <= 0)
    # Errors from the tracker model's resolution: positive, growing as pT falls.
    assert np.all(tracks["sigma_d0"] > 0) and np.corrcoef(tracks["sigma_d0"], 1 / tracks["pt"])[0, 1] > 0.9


def test_a_permutation_of_the_tracks_permutes_the_labels_with_them(set2graph_files, tmp_path, tiny_config_session):
    import awkward as ak

    resolution = tiny_config_session["tracker"]["resolution"]
    branches = _branches(set2graph_files / "valid_data.root")
    counts = ak.to_numpy(ak.num(branches["trk_pt"]))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng(4)
    owner = np.repeat(np.arange(len(counts)), counts)
    permutation = np.lexsort((rng.random(len(owner)), owner))
    track_names = [name for name in branches if name.startswith("trk_")]

    def permuted(names):
        out = dict(branches)
        for name in names:
            out[name] = ak.unflatten(ak.to_numpy(ak.flatten(branches[name]))[permutation], counts)
        return out

    with Set2GraphFile(set2graph_files / "valid_data.root") as reader:
        expected = reader.track_sets(0, reader.n_jets, resolution)
    with Set2GraphFile(_tree(tmp_path / "together.root", permuted(track_names))) as reader:
        together = reader.track_sets(0, reader.n_jets, resolution)
    for name in ("pt", "d0", "z0", "vertex", "sigma_z0"):
        np.testing.assert_array_equal(together[1][name], expected[1][name])
    # The authors' loader's mistake, features moved without their labels: another partition,
    # which this test would see.
    with Set2GraphFile(_tree(tmp_path / "apart.root", permuted([n for n in track_names if n != "trk_vtx_index"]))) as r:
        apart = r.track_sets(0, r.n_jets, resolution)
    assert _pairs(apart[1]["vertex"], offsets) != _pairs(expected[1]["vertex"], offsets)


def test_track_order_and_labels_by_hand():
    offsets = np.array([0, 3, 3, 5])
    order = decreasing_pt_order(np.array([1.0, 3.0, 2.0, 5.0, 7.0]), offsets)
    np.testing.assert_array_equal(order, [1, 2, 0, 4, 3])
    np.testing.assert_array_equal(first_appearance_labels(np.array([7, 2, 7, 9, 9]), offsets), [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(first_appearance_labels(np.array([5, 0, 5, 3, 1]), offsets), [0, 1, 0, 0, 1])


def test_a_wrong_set2graph_file_is_refused_naming_the_file_and_the_branch(set2graph_files, tmp_path,
                                                                         tiny_config_session):
    import awkward as ak

    good = _branches(set2graph_files / "test_data.root")
    counts = ak.to_numpy(ak.num(good["trk_pt"]))

    def changed(drop=(), **replace):
        return {name: replace.get(name, values) for name, values in good.items() if name not in drop}

    shorter = ak.unflatten(ak.to_numpy(ak.flatten(good["trk_d0"]))[: counts.sum() - 1],
                           np.concatenate([counts[:-1], [counts[-1] - 1]]))
    cases = {
        "missing branch": (changed(drop=["trk_vtx_index"]), "no branch 'trk_vtx_index'"),
        "flat track branch": (changed(trk_pt=np.ones(len(counts), np.float32)), "branch 'trk_pt' is a flat array"),
        "integer pt": (changed(trk_pt=ak.values_astype(good["trk_pt"], np.int32)),
                       "branch 'trk_pt'.*expected floating"),
        "empty": ({name: values[:0] for name, values in good.items()}, "holds no jets"),
    }
    for name, (branches, message) in cases.items():
        path = _tree(tmp_path / f"{name}.root", branches)
        with pytest.raises(ValueError, match=message) as error:
            Set2GraphFile(path)
        assert str(path) in str(error.value), name
    path = _tree(tmp_path / "Tree.root", good, name="Tree")
    with pytest.raises(ValueError, match=r"Tree.root: no TTree 'tree' .*found \['Tree'\]"):
        Set2GraphFile(path)
    text = tmp_path / "text.root"
    text.write_text("not ROOT")
    with pytest.raises(ValueError, match="text.root: not a ROOT file"):
        Set2GraphFile(text)
    resolution = tiny_config_session["tracker"]["resolution"]
    with Set2GraphFile(_tree(tmp_path / "short.root", changed(trk_d0=shorter))) as reader:
        message = rf"branch 'trk_d0' has {counts[-1] - 1} tracks in entry {len(counts) - 1}"
        with pytest.raises(ValueError, match=message):
            reader.track_sets(0, reader.n_jets, resolution)
    flavour = ak.to_numpy(good["jet_flav"]).copy()
    flavour[2] = 3
    with Set2GraphFile(_tree(tmp_path / "flavour.root", changed(jet_flav=flavour))) as reader:
        with pytest.raises(ValueError, match=r"branch 'jet_flav': 3 in entry 2"):
            reader.track_sets(0, reader.n_jets, resolution)


def test_set2graph_files_become_track_graphs(set2graph_files, tmp_path):
    config = reference_config(tmp_path, s2g=set2graph_files, vertexing={"sample": "s2g"})
    inputs = source_files(config["samples"]["s2g"])
    outputs = {split: tmp_path / f"graphs_{split}.h5" for split in SPLITS}
    counts = build_track_graphs(config, "s2g", inputs, outputs)
    with RaggedReader(outputs["train"], TRACK_GRAPHS) as reader:
        features, _ = reader.read_children("tracks", 0, reader.n_rows("jets"))
        assert reader.n_rows("jets") == counts["train"] > 0
        assert "Set2Graph secondary-vertex jets" in reader.attrs["dataset"]
    assert np.all(np.isfinite(features["features"]))
    # Standardised on the training file: mean 0, standard deviation 1 per feature.
    np.testing.assert_allclose(features["features"].mean(axis=0), 0, atol=1e-4)


# --- the config -----------------------------------------------------------------------


def test_file_samples_in_the_config(tmp_path, set2graph_files):
    config = reference_config(tmp_path, s2g=set2graph_files)
    assert config["vertexing"]["sample"] == "s2g" and config["samples"]["s2g"] == {
        "source": {"format": "set2graph", "path": str(set2graph_files)}}  # no generator defaults
    check_sources(config)
    for raw, message in [
        ({"toptag": {"source": {"format": "top", "path": "x"}}}, "samples.toptag.source.format: 'top' is not one of"),
        ({"toptag": {"source": {"format": "top_tagging", "path": "x"}, "shards": 2}}, "'shards' was unexpected"),
        ({"toptag": {"source": {"format": "top_tagging"}}}, "'path' is a required property"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_config({"samples": raw})
    top = {"source": {"format": "top_tagging", "path": str(tmp_path)}}
    with pytest.raises(ConfigError, match="jet_images.signal: 'toptag' is a top_tagging file sample"):
        resolve_config({"samples": {"toptag": top, "qcd": {"process": "qcd_dijet", "particles": {"store": True}}},
                        "jet_images": {"signal": "toptag"}})
    with pytest.raises(ConfigError, match="vertexing.sample: 'toptag' has no track sets"):
        resolve_config({"samples": {"toptag": top}, "vertexing": {"sample": "toptag"}})
    with pytest.raises(ConfigError, match=rf"test: samples.toptag \(top_tagging\): {tmp_path}/train.h5: no such file"):
        check_sources(resolve_config({"samples": {"toptag": top}, "jet_images": {"signal": "toptag",
                                                                                 "background": "toptag"}}), "test")


# --- the whole DAG on them ------------------------------------------------------------


@pytest.mark.slow
def test_the_studies_run_end_to_end_on_files_in_the_authors_layouts(tmp_path, set2graph_files):
    """The tiny run's vertexing, flavour-tagging and jet-image studies on a Set2Graph and a
    top-tagging file sample: no generation, no detector; every table and MLflow run names
    the data set. With them, a tiny learning curve (two points, two seeds, Set2Graph and the
    CNN): its table, figures and runs, and its full-size, first-seed point is the study's own
    training, weight for weight (one run of the DAG for both: the suite's time)."""
    from mlflow.tracking import MlflowClient
    from workflow_runs import job_counts, run_snakemake, write_config

    from pipeline.studies import active_studies
    from pipeline.tiny import tiny_workflow_config

    top = write_top_tagging_files(tmp_path / "top_tagging", {"train": 400, "val": 150, "test": 150}, seed=8)
    raw = tiny_workflow_config()
    raw["samples"] = {"toptag": {"source": {"format": "top_tagging", "path": str(top)}},
                      "s2g": {"source": {"format": "set2graph", "path": str(set2graph_files)}}}
    raw["jet_images"].update(signal="toptag", background="toptag")
    raw["learning_curves"] = {"studies": ["vertexing", "jet_images"], "methods": ["set2graph", "cnn"],
                              "fractions": [0.5, 1.0], "seeds": 2}
    result = run_snakemake(tmp_path, "--configfile", str(write_config(tmp_path, raw)))
    jobs = job_counts(result.stdout + result.stderr)
    config = resolve_config(raw)
    assert [study.name for study in active_studies(config)] == ["vertexing", "flavour_tagging", "jet_images",
                                                                 "learning_curves"]
    planned = {"all": 1}
    for study in active_studies(config):
        planned.update(study.jobs(config))
    assert jobs == {**planned, "total": sum(planned.values())}  # no generate, tracker, calorimeter or split
    assert jobs["convert_jet_images"] == 1 and jobs["build_graphs_vertexing"] == 1
    assert jobs["train_learning_curves"] == 8 and jobs["subset_learning_curves"] == 4

    results = tmp_path / "results"
    set2graph, top_tagging = describe(config, "s2g"), describe(config, "toptag")
    assert set2graph.startswith("Set2Graph secondary-vertex jets (Shlomi et al.")
    for table in ("vertexing/table.md", "flavour_tagging/table.md"):
        assert (results / table).read_text().startswith(f"Data: {set2graph}.\n"), table
    assert (results / "vertexing" / "table.tex").read_text().startswith(f"% data: {set2graph}\n")
    for table in ("taggers.md", "autoencoder.md", "denoising.md"):
        assert (results / "jet_images" / table).read_text().startswith(f"Data: {top_tagging}.\n"), table
    with RaggedReader(results / "jet_images" / "data" / "test.h5", jet_images_schema()) as reader:
        assert reader.n_rows("jets") == 150  # the authors' test file, every jet
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert sorted(run.info.run_name for run in runs) == sorted(
        name for study in active_studies(config) for name in study.runs(config))
    for run in runs:
        images = run.data.tags["study"] == "jet_images" or run.data.tags["method"] in ("mlp", "cnn")
        assert run.data.tags.get("dataset") == (top_tagging if images else set2graph), run.info.run_name
        # Named by its study, step and method, as its tags say (the learning curves' too).
        assert run.info.run_name == ".".join(run.data.tags[k] for k in ("study", "step", "method"))
    tags = {(r.data.tags["learning_curve.fraction"], r.data.tags["learning_curve.replica"])
            for r in runs if r.info.run_name == "learning_curves.train.cnn"}
    assert tags == {("0.5", "0"), ("0.5", "1"), ("1.0", "0"), ("1.0", "1")}

    # The learning curve: every training's numbers, each point's size, the table and figures.
    curves = results / "learning_curves"
    with open(curves / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3 + 2 * 2 * 2  # set2graph: F1 b, c, light; cnn: AUC, rejection; 2 points, 2 seeds
    sizes = set()
    for fraction in ("0.5", "1"):
        with RaggedReader(curves / "jet_images" / "data" / f"train_{fraction}.h5", jet_images_schema()) as reader:
            sizes.add(str(reader.n_rows("jets")))
    assert {r["train_jets"] for r in rows if r["method"] == "cnn"} == sizes == {"200", "400"}
    table = (curves / "curve.md").read_text()
    assert "| set2graph | f1_b |" in table and "| cnn | auc |" in table and "1,211,000 jets" in table
    assert f"Data: {top_tagging}." in table and f"Data: {set2graph}." in table
    # The untrained finders on the same test jets are the vertexing study's own numbers for them.
    with open(results / "vertexing" / "metrics.csv") as f:
        study_f1 = {(r["method"], r["flavour"]): float(r["f1"]) for r in csv.DictReader(f)}
    for finder in ("avr", "baseline", "single_vertex"):
        line = next(line for line in table.splitlines() if line.startswith(f"| {finder} |"))
        cells = [cell.strip() for cell in line.split("|")[2:5]]
        assert [float(c) for c in cells] == pytest.approx([study_f1[finder, f] for f in ("b", "c", "light")], abs=6e-4)
    assert "| avr |" in table and "0.56 / 0.7 / 0.97" in table
    assert "QCD jets rests on the" in table
    assert "| jet pT [GeV] |" in table and "| 76 (49) |" in table and "| b jets: true vertices |" in table
    for name in ("vertexing", "jet_images"):
        assert (curves / f"{name}.png").stat().st_size > 1000 and (curves / f"{name}.pdf").exists()
    # Its full-size, first-seed point is the vertexing study's own training; the second seed is not.
    mine = load_checkpoint(curves / "models" / "set2graph_1_seed0.ckpt")["state_dict"]
    theirs = load_checkpoint(results / "vertexing" / "models" / "set2graph.ckpt")["state_dict"]
    other = load_checkpoint(curves / "models" / "set2graph_1_seed1.ckpt")["state_dict"]
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert not all(torch.equal(other[k], theirs[k]) for k in theirs)

    # The report's captions and front page say which files each result was made from.
    import json
    import zipfile

    run_snakemake(tmp_path, "--report", str(tmp_path / "report.zip"), "--configfile", str(tmp_path / "config.yaml"))
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        page = archive.read("report/report.html").decode()

    def embedded(name):
        return json.JSONDecoder().raw_decode(page.split(f'<script id="{name}">', 1)[1].split("=", 1)[1].strip())[0]

    entries = embedded("results")
    # vertexing, flavour tagging (and its six confusion matrices), jet images, learning curves
    assert len(entries) == 3 + 2 + 6 + 9 + 3
    for path, entry in entries.items():
        assert "system-message" not in entry["caption"], path  # rendered, no RST error
        if "/learning_curves/" not in path:  # (whose captions name no sample)
            assert (str(top) if "/jet_images/" in path else str(set2graph_files)) in entry["caption"], path
    assert "Set2Graph secondary-vertex jets" in entries["results/vertexing/table.md"]["caption"]
    assert "Top Quark Tagging Reference Dataset" in entries["results/jet_images/taggers.md"]["caption"]
    description = embedded("workflow-desc")
    assert "not generated here" in description and str(top) in description and "system-message" not in description
