"""Bad configurations and Pythia settings, one row each: every one is refused before any job
(validate_config and check_pythia_settings_of, which the Snakefile calls at parse time), and the message names the
source, the key and the value, and what was expected."""

from __future__ import annotations

import copy
import re

import pytest

from pipeline.config import ConfigError
from pipeline.io.hdf5 import Collection, DataFileError, Field, FileSchema, RaggedReader, RaggedWriter, provenance_attrs
from pipeline.run_config import load_config, resolve_config
from pipeline.simulation.checks import check_generators
from pipeline.simulation.pythia import check_pythia_settings

SOURCE = "bad-config.yaml"
INF, NAN = float("inf"), float("nan")
NOT_FINITE = "is not of type 'number' (expected a finite number: .inf and .nan are not settings)"
URI_FORMS = "not a tracking URI; expected sqlite:///<path>, http(s)://<host>[:<port>][/<path>]"


def sample(**settings) -> dict:
    return {"samples": {"ttbar": {"process": "ttbar", **settings}}}


def with_uri(uri: str) -> dict:
    return {**sample(), "mlflow": {"tracking_uri": uri}}


#: (id, a config (validate_config) or a Pythia setting (check_pythia_settings), a fragment of the message)
CASES = [
    # Whole-number floats where an integer belongs (jsonschema's "integer" accepts them).
    ("float-shards", sample(shards=2.0),
     "samples.ttbar.shards: 2.0 is not of type 'integer' (write whole numbers without a decimal point)"),
    ("float-seed", {**sample(), "seed": 3.0}, "seed: 3.0 is not of type 'integer'"),
    ("float-events-per-shard", sample(events_per_shard=200.0), "samples.ttbar.events_per_shard: 200.0 is not of type 'integer'"),
    ("float-devices", {**sample(), "training": {"devices": 1.0}}, "training.devices: 1.0 is not of type 'integer'"),
    ("auto-devices", {**sample(), "training": {"devices": "auto"}}, "training.devices: 'auto' is not of type 'integer'"),
    ("zero-devices", {**sample(), "training": {"devices": 0}}, "training.devices: 0 is less than the minimum of 1"),
    ("nodes-without-srun", {**sample(), "training": {"num_nodes": 2}},
     "training.num_nodes: 2 nodes need training.launcher: srun"),
    ("fp16-on-cpu", {**sample(), "training": {"accelerator": "cpu", "precision": "16-mixed"}},
     "training.precision: 16-mixed runs on GPUs only"),
    ("study-fp16-on-cpu", {**sample(), "training": {"accelerator": "cpu"},
                           "flavour_tagging": {"training": {"precision": "16-mixed"}}},
     "flavour_tagging.training.precision: 16-mixed runs on GPUs only"),
    ("unknown-launcher", {**sample(), "training": {"launcher": "mpirun"}},
     "training.launcher: 'mpirun' is not one of ['lightning', 'srun']"),
    ("bool-shards", sample(shards=True), "samples.ttbar.shards: True is not of type 'integer'"),
    # Lower limits not below the upper ones; -1 is no limit, values between -1 and 0 mean nothing.
    ("pthat-order", sample(pthat_min=700.0, pthat_max=500.0),
     "samples.ttbar.pthat_min (700.0) is not below samples.ttbar.pthat_max (500.0); expected pthat_min < pthat_max"),
    ("pthat-equal", sample(pthat_min=500, pthat_max=500), "samples.ttbar.pthat_min (500) is not below samples.ttbar.pthat_max (500)"),
    ("pthat-max-zero", sample(pthat_max=0), "samples.ttbar.pthat_min (0.0) is not below samples.ttbar.pthat_max (0)"),
    ("pthat-max-between", sample(pthat_max=-0.5), "samples.ttbar.pthat_max: -0.5: expected -1 for no limit, or a limit >= 0"),
    ("jets-pt-order", sample(jets={"min_pt": 650.0, "max_pt": 550.0}),
     "samples.ttbar.jets.min_pt (650.0) is not below samples.ttbar.jets.max_pt (550.0); expected min_pt < max_pt"),
    ("jets-max-pt-between", sample(jets={"max_pt": -0.2}), "samples.ttbar.jets.max_pt: -0.2: expected -1 for no limit"),
    # Tracking URIs that are no URIs.
    ("uri-http-colon", with_uri("http:"), f"mlflow.tracking_uri: 'http:': {URI_FORMS}"),
    ("uri-http-no-host", with_uri("http://"), f"mlflow.tracking_uri: 'http://': {URI_FORMS}"),
    ("uri-http-port-word", with_uri("http://host:port"), f"mlflow.tracking_uri: 'http://host:port': {URI_FORMS}"),
    ("uri-sqlite-colon", with_uri("sqlite:"), f"mlflow.tracking_uri: 'sqlite:': {URI_FORMS}"),
    ("uri-sqlite-no-path", with_uri("sqlite://"), f"mlflow.tracking_uri: 'sqlite://': {URI_FORMS}"),
    ("uri-postgresql-empty", with_uri("postgresql://"), f"mlflow.tracking_uri: 'postgresql://': {URI_FORMS}"),
    ("uri-file-empty", with_uri("file:"), f"mlflow.tracking_uri: 'file:': {URI_FORMS}"),
    # Credentials, which the config snapshots and job logs would keep in clear text.
    ("uri-password", with_uri("http://alice:s3cret@host:5000"),
     "mlflow.tracking_uri: 'http://alice:***@host:5000' holds a password; the config is written to results/config/"),
    ("uri-password-database", with_uri("postgresql://bob:s3cret@db/mlflow"),
     "'postgresql://bob:***@db/mlflow' holds a password; "),
    ("uri-password-and-no-port", with_uri("http://alice:s3cret@host:port"), f"'http://alice:***@host:port': {URI_FORMS}"),
    # Absurd counts.
    ("huge-events-per-shard", sample(events_per_shard=2_000_000),
     "samples.ttbar.events_per_shard: 2000000 is greater than the maximum of 1000000 (use more shards instead)"),
    ("huge-shards", sample(shards=1_000_000), "samples.ttbar.shards: 1000000 is greater than the maximum of 100000"),
    ("huge-batch", sample(batch_size=1_000_000), "samples.ttbar.batch_size: 1000000 is greater than the maximum of 10000"),
    ("huge-training-batch", {**sample(), "training": {"batch_size": 10**7}},
     "training.batch_size: 10000000 is greater than the maximum of 65536"),
    ("empty-samples", {"samples": {}}, "samples: {} should be non-empty (`samples` needs at least one sample)"),
    # A Pythia setting Pythia would misread, in a config and on its own.
    ("pythia-in-config", sample(pythia_settings=["24:onMode = off", "Top:gg2ttbar = maybe"]),
     "samples.ttbar.pythia_settings: 'Top:gg2ttbar = maybe': Top:gg2ttbar is a flag: expected on or off"),
    ("pythia-flag-word", "Top:gg2ttbar = maybe", "Top:gg2ttbar is a flag: expected on or off (Pythia reads any other word as off), got 'maybe'"),
    ("pythia-flag-two-words", "HardQCD:all = on off", "HardQCD:all is a flag: expected on or off"),
    ("pythia-mode-real", "Beams:frameType = 2.5", "Beams:frameType is a mode: expected an integer in [1, 5], got '2.5'"),
    ("pythia-mode-range", "Beams:frameType = 7", "Beams:frameType is a mode: expected an integer in [1, 5], got '7'"),
    ("pythia-mode-whole-float", "Random:seed = 3.0", "Random:seed is a mode: expected an integer <= 900000000, got '3.0'"),
    ("pythia-parm-fortran", "PhaseSpace:pTHatMin = 1d2", "PhaseSpace:pTHatMin is a parm: expected a number >= 0, got '1d2'"),
    ("pythia-parm-unit", "PhaseSpace:pTHatMin = 20 GeV", "PhaseSpace:pTHatMin is a parm: expected a number >= 0, got '20 GeV'"),
    ("pythia-parm-range", "SigmaProcess:alphaSvalue = 5", "SigmaProcess:alphaSvalue is a parm: expected a number in [0.06, 0.25]"),
    ("pythia-word-spaces", "PDF:pSet = LHAPDF6:NNPDF31 x", "PDF:pSet is a word: expected a word, got 'LHAPDF6:NNPDF31 x'"),
    ("pythia-mode-vector-spaces", "Beams:idAList = 2212, 211",
     "Beams:idAList is a mode vector: expected a comma-separated list without spaces, each element an integer"),
    ("pythia-particle-flag", "24:mayDecay = maybe", "the particle property mayDecay expects on or off"),
    ("pythia-particle-ids", "24:onIfAny = 1 2 x", "the particle property onIfAny expects particle ids (integers), got '1 2 x'"),
    ("pythia-particle-number", "6:m0 = heavy", "the particle property m0 expects a number, got 'heavy'"),
    # Older cases: unknown key, wrong type, split fractions, unknown sample names.
    ("unknown-key", sample(event_per_shard=10),
     "samples.ttbar: Additional properties are not allowed ('event_per_shard' was unexpected)"),
    ("unknown-top-level-key", {**sample(), "trackr": {}}, "<top level>: Additional properties are not allowed ('trackr'"),
    ("wrong-type", {**sample(), "tracker": {"bfield": "2T"}}, "tracker.bfield: '2T' is not of type 'number'"),
    ("split-sum", {**sample(), "split": {"train": 0.8}}, "split: train + val + test = 1.1, expected 1"),
    ("vertexing-sample", {**sample(), "vertexing": {"sample": "dijet"}},
     "vertexing.sample: unknown sample 'dijet', expected one of ['ttbar']"),
    # Non-finite numbers, as YAML writes them (.inf, .nan): the schema's numbers are finite.
    ("inf-learning-rate", {**sample(), "training": {"learning_rate": INF}}, f"training.learning_rate: inf {NOT_FINITE}"),
    ("nan-learning-rate", {**sample(), "training": {"learning_rate": NAN}}, f"training.learning_rate: nan {NOT_FINITE}"),
    ("nan-pthat-min", sample(pthat_min=NAN), f"samples.ttbar.pthat_min: nan {NOT_FINITE}"),
    ("inf-sqrt-s", sample(sqrt_s=INF), f"samples.ttbar.sqrt_s: inf {NOT_FINITE}"),
    ("nan-charm-fraction", {**sample(), "flavour_tagging": {"charm_fraction": NAN}},
     f"flavour_tagging.charm_fraction: nan {NOT_FINITE}"),
    ("nan-split", {**sample(), "split": {"train": NAN}}, f"split.train: nan {NOT_FINITE}"),
    ("nan-dropout", {**sample(), "jet_images": {"mlp": {"dropout": NAN}}}, f"jet_images.mlp.dropout: nan {NOT_FINITE}"),
    # An empty set: no validation loss to stop on, no test set to measure.
    ("zero-split-val", {**sample(), "split": {"train": 0.85, "val": 0}},
     "split.val: 0 is less than or equal to the minimum of 0 (every set needs events"),
]


@pytest.mark.parametrize("bad, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_refused_naming_source_key_and_value(bad, expected):
    if isinstance(bad, str):
        with pytest.raises(ValueError) as info:
            check_pythia_settings(["24:onMode = off", bad])
        message = str(info.value)
        assert message.startswith(f"{bad!r}: "), message  # the setting itself, as written
    else:
        with pytest.raises(ConfigError) as info:
            check_generators(resolve_config(bad, source=SOURCE), source=SOURCE)
        message = str(info.value)
        assert message.startswith(f"{SOURCE}: invalid configuration:\n"), message
    assert expected in message, f"{expected!r} not in:\n{message}"


def numeric_settings(node, path=()):
    """The key path of every number in a resolved config (list items by index)."""
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path
    elif isinstance(node, (dict, list)):
        for key, value in (node.items() if isinstance(node, dict) else enumerate(node)):
            yield from numeric_settings(value, (*path, key))


def test_every_number_of_the_schema_is_refused_when_not_finite():
    resolved = resolve_config(sample())
    paths = list(numeric_settings(resolved))
    assert len(paths) > 100 and ("training", "learning_rate") in paths
    for path in paths:
        for value in (NAN, -INF) if path == ("seed",) or path[-1] == "learning_rate" else (NAN,):
            bad = copy.deepcopy(resolved)
            node = bad
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            with pytest.raises(ConfigError) as info:
                resolve_config(bad, source=SOURCE)
            line = str(info.value).splitlines()[1]
            assert line.endswith("settings)") or "not of type 'integer'" in line, line
            assert f".{path[-1]}: {value}" in line or line.startswith(f"  {path[-1]}: "), (path, line)


def test_a_yaml_files_inf_is_refused_naming_the_file_and_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("samples: {ttbar: {process: ttbar}}\ntraining: {learning_rate: .inf}\n")
    expected = f"{path}: invalid configuration:\n  training.learning_rate: inf {NOT_FINITE}"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(path)


def test_a_stored_config_with_nan_is_refused_naming_the_file(tmp_path):
    """A file's stored config (its `config` attribute, JSON) is read back by later steps: JSON's
    NaN and Infinity are refused there too, and never written."""
    events = Collection("events", None, (Field("energy", "f8", "GeV", "energy"),))
    path = tmp_path / "shard.h5"
    with RaggedWriter(path, FileSchema("test_events", 1, (events,), "a test schema"),
                      {"config": '{"training": {"learning_rate": NaN}}', "seed": 1}):
        pass
    with RaggedReader(path, FileSchema("test_events", 1, (events,), "a test schema")) as reader:
        with pytest.raises(DataFileError, match=f"{path}: 'config' attribute is not JSON .it holds NaN, and a config"):
            reader.config
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        provenance_attrs({"training": {"learning_rate": NAN}}, "hash", 1)


@pytest.mark.parametrize("uri", ["http://alice:s3cret@host:5000", "https://alice:s3cret@host/mlflow",
                                 "mysql+pymysql://bob:s3cret@db:3306/runs", "http://alice:s3cret@host:port"])
def test_a_password_in_the_tracking_uri_is_never_repeated(uri, tmp_path):
    with pytest.raises(ConfigError) as info:
        resolve_config(with_uri(uri), source=SOURCE)
    assert "s3cret" not in str(info.value) and ":***@" in str(info.value)
    # A user name alone is no secret: a database store may take its password from the environment.
    assert resolve_config(with_uri("postgresql://bob@db/mlflow"))["mlflow"]["tracking_uri"] == "postgresql://bob@db/mlflow"
