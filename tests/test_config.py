"""Config validation: schema defaults, errors that name the key, seeds and hashes."""

from __future__ import annotations

import copy

import pytest

from pipeline.config import (
    ConfigError,
    config_hash,
    snapshot_config,
    stage_config,
    without_bookkeeping,
    write_resolved_config,
)
from pipeline.run_config import load_config, resolve_config
from pipeline.seeds import PYTHIA_MAX_SEED, derive_seed
from pipeline.studies import active_studies

MINIMAL = {"samples": {"ttbar": {"process": "ttbar"}}}


def with_sample(**settings) -> dict:
    return {"samples": {"ttbar": {"process": "ttbar", **settings}}}


def raises_naming(config: dict, *needles: str) -> str:
    """resolve_config(config) raises ConfigError whose message contains every needle."""
    with pytest.raises(ConfigError) as info:
        resolve_config(config, source="my-config.yaml")
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in error message:\n{message}"
    assert "my-config.yaml" in message
    return message


# --- defaults -------------------------------------------------------------------------


def test_defaults_are_filled_in():
    resolved = resolve_config(MINIMAL)
    assert resolved["seed"] == 20261124
    assert resolved["tracker"]["bfield"] == 2.0
    assert resolved["tracker"]["min_pt"] == 1.0
    assert resolved["tracker"]["max_abs_eta"] == 2.5
    assert resolved["tracker"]["vertex_merge_distance"] == 0.01
    # Deeply nested defaults (object default {} whose properties have defaults).
    assert resolved["tracker"]["resolution"]["d0"] == {"constant": 0.010, "slope": 0.070}
    assert resolved["tracker"]["resolution"]["pt"]["eta_scale"] == 1.5
    sample = resolved["samples"]["ttbar"]
    # Subset checks: the schema may grow new keys without breaking these.
    assert sample["jets"].items() >= {"algorithm": "antikt", "radius": 0.4, "min_pt": 20.0,
                                      "max_abs_eta": 2.5}.items()
    assert sample["flavour"].items() >= {"match_dr": 0.3, "hadron_min_pt": 5.0}.items()
    assert sample["beam_spot"].items() >= {"sigma_x": 0.015, "sigma_y": 0.015, "sigma_z": 45.0}.items()
    assert sample["sqrt_s"] == 13000.0
    assert sample["events_per_shard"] == 200 and sample["shards"] == 2
    assert resolved["split"].items() >= {"train": 0.7, "val": 0.15, "test": 0.15}.items()
    assert resolved["validation"]["samples"] == []


def test_given_values_are_kept_and_partial_sections_completed():
    resolved = resolve_config(
        {"seed": 5, "tracker": {"bfield": 3.8, "resolution": {"d0": {"slope": 0.1}}},
         **with_sample(jets={"radius": 0.6}, shards=7)}
    )
    assert resolved["seed"] == 5
    assert resolved["tracker"]["bfield"] == 3.8
    assert resolved["tracker"]["resolution"]["d0"] == {"constant": 0.010, "slope": 0.1}
    sample = resolved["samples"]["ttbar"]
    assert sample["jets"]["radius"] == 0.6 and sample["jets"]["min_pt"] == 20.0
    assert sample["shards"] == 7


def test_validation_does_not_modify_its_input():
    config = with_sample(jets={"radius": 0.6})
    before = copy.deepcopy(config)
    resolve_config(config)
    assert config == before


def test_resolved_configs_do_not_share_default_objects():
    first = resolve_config(MINIMAL)
    first["tracker"]["resolution"]["d0"]["constant"] = 99.0
    first["samples"]["ttbar"]["pythia_settings"].append("Foo:bar = 1")
    second = resolve_config(MINIMAL)
    assert second["tracker"]["resolution"]["d0"]["constant"] == 0.010
    assert second["samples"]["ttbar"]["pythia_settings"] == []


def test_every_sample_gets_its_own_defaults():
    resolved = resolve_config({"samples": {"a": {"process": "ttbar"}, "b": {"process": "qcd_dijet", "shards": 4}}})
    assert resolved["samples"]["a"]["shards"] == 2
    assert resolved["samples"]["b"]["shards"] == 4
    assert resolved["samples"]["b"]["jets"]["radius"] == 0.4


# --- errors name the key ----------------------------------------------------------------


def test_unknown_top_level_key():
    raises_naming({**MINIMAL, "trackr": {}}, "trackr")


def test_unknown_key_inside_a_sample():
    raises_naming(with_sample(event_per_shard=10), "samples.ttbar", "event_per_shard")


def test_unknown_key_deep_inside_a_sample():
    raises_naming(with_sample(jets={"radious": 0.4}), "samples.ttbar.jets", "radious")


def test_unknown_key_inside_the_tracker():
    raises_naming({**MINIMAL, "tracker": {"resolution": {"d0": {"offset": 1.0}}}},
                  "tracker.resolution.d0", "offset")


@pytest.mark.parametrize(
    "config, path",
    [
        (with_sample(events_per_shard="many"), "samples.ttbar.events_per_shard"),
        (with_sample(shards=2.5), "samples.ttbar.shards"),
        (with_sample(jets={"radius": "0.4"}), "samples.ttbar.jets.radius"),
        ({**MINIMAL, "tracker": {"bfield": "2T"}}, "tracker.bfield"),
        ({**MINIMAL, "seed": "abc"}, "seed"),
        (with_sample(process="zprime"), "samples.ttbar.process"),
        (with_sample(pythia_settings="Top:all = on"), "samples.ttbar.pythia_settings"),
    ],
)
def test_wrong_type_names_the_key(config, path):
    raises_naming(config, path)


@pytest.mark.parametrize("shards", [0, -1, -100])
def test_non_positive_shard_count(shards):
    raises_naming(with_sample(shards=shards), "samples.ttbar.shards")


@pytest.mark.parametrize(
    "config, path",
    [
        (with_sample(events_per_shard=0), "samples.ttbar.events_per_shard"),
        (with_sample(jets={"radius": 0}), "samples.ttbar.jets.radius"),
        ({**MINIMAL, "tracker": {"bfield": 0}}, "tracker.bfield"),
        ({**MINIMAL, "tracker": {"efficiency": 1.5}}, "tracker.efficiency"),
        ({**MINIMAL, "seed": -1}, "seed"),
    ],
)
def test_out_of_range_values_name_the_key(config, path):
    raises_naming(config, path)


def test_samples_are_required_and_non_empty():
    raises_naming({"seed": 1}, "samples")
    raises_naming({"samples": {}}, "samples")


def test_sample_process_is_required():
    raises_naming({"samples": {"ttbar": {"shards": 1}}}, "samples.ttbar", "process")


@pytest.mark.parametrize(
    "split",
    [
        {"train": 0.8},  # 0.8 + 0.15 + 0.15 = 1.1 with the defaults
        {"train": 0.5, "val": 0.2, "test": 0.2},
        {"train": 0.7, "val": 0.2, "test": 0.2},
    ],
)
def test_split_fractions_must_add_up_to_one(split):
    raises_naming({**MINIMAL, "split": split}, "split")


def test_split_fractions_adding_up_to_one_are_accepted():
    resolved = resolve_config({**MINIMAL, "split": {"train": 0.6, "val": 0.3, "test": 0.1}})
    assert resolved["split"].items() >= {"train": 0.6, "val": 0.3, "test": 0.1}.items()


def test_validation_samples_must_exist():
    raises_naming({**MINIMAL, "validation": {"samples": ["ttbar", "dijet"]}}, "validation.samples", "dijet")
    assert resolve_config({**MINIMAL, "validation": {"samples": ["ttbar"]}})["validation"]["samples"] == ["ttbar"]


# --- load_config ---------------------------------------------------------------------


def test_load_config_reads_and_validates(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("seed: 9\nsamples:\n  ttbar:\n    process: ttbar\n    shards: 3\n")
    resolved = load_config(path)
    assert resolved["seed"] == 9
    assert resolved["samples"]["ttbar"]["shards"] == 3
    assert resolved["tracker"]["bfield"] == 2.0


def test_load_config_missing_file_names_it(tmp_path):
    path = tmp_path / "nowhere" / "config.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("samples:\n  ttbar: {process: ttbar\n  shards: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_non_mapping_names_the_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_schema_error_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("samples:\n  ttbar:\n    process: ttbar\n    shards: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "samples.ttbar.shards" in str(info.value)


# --- derive_seed -----------------------------------------------------------------------


@pytest.mark.parametrize("args, seed", [
    ((123, "ttbar", 3, "pythia"), 120467123),  # the docstring's example
    ((0, "ttbar", 0, "pythia"), 609590555),
    ((20261124, "ttbar", 0, "pythia"), 174847867),  # config.yaml's seed: the first shard's Pythia
    ((20261124, "ttbar", 7, "tracker"), 449954694),
    ((20261124, "vertexing", "set2graph"), 331428625),
    ((3, "jet_images", "shuffle"), 733985575),
    ((2**32 - 1, "qcd", 7, "tracker"), 267155985),
])
def test_derive_seed_is_stable_across_machines_and_versions(args, seed):
    # Pinned values (SHA-256 of "seed:name:...", first 8 bytes little-endian, mod maximum, + 1):
    # a change here changes every sample, split and training of every existing config.
    assert derive_seed(*args) == seed
    assert type(derive_seed(*args)) is int


def test_derive_seed_with_a_small_maximum_is_pinned_too():
    assert [derive_seed(7, "x", k, maximum=3) for k in range(8)] == [3, 2, 2, 2, 3, 3, 2, 3]


def test_derive_seed_differs_between_streams():
    base = derive_seed(123, "ttbar", 0, "pythia")
    assert derive_seed(123, "ttbar", 1, "pythia") != base  # shard
    assert derive_seed(123, "dijet", 0, "pythia") != base  # sample
    assert derive_seed(123, "ttbar", 0, "tracker") != base  # stream
    assert derive_seed(124, "ttbar", 0, "pythia") != base  # global seed
    assert derive_seed(123, "ttbar", 0) != base  # fewer names
    # The names are kept apart, not concatenated: ("ab", "c") is not ("a", "bc").
    assert derive_seed(1, "ab", "c") != derive_seed(1, "a", "bc")
    seeds = {derive_seed(1, "ttbar", shard, "pythia") for shard in range(200)}
    assert len(seeds) == 200


def test_derive_seed_range():
    seeds = [derive_seed(g, s, k, "pythia") for g in (0, 1, 2**32 - 1) for s in ("a", "b") for k in range(50)]
    assert all(isinstance(x, int) and 1 <= x <= PYTHIA_MAX_SEED for x in seeds)
    assert PYTHIA_MAX_SEED == 900_000_000
    # A small maximum is reached at both ends and never exceeded (no off-by-one).
    small = {derive_seed(7, "x", k, maximum=3) for k in range(200)}
    assert small == {1, 2, 3}


# --- config_hash -----------------------------------------------------------------------


def test_config_hash_ignores_key_order():
    a = {"seed": 1, "samples": {"x": {"process": "ttbar", "shards": 2}, "y": {"process": "custom"}},
         "tracker": {"bfield": 2.0, "min_pt": 1.0}, "vertexing": {"sample": "x"}}
    # (vertexing.sample is named: its default, the first sample, depends on the order.)
    b = {"tracker": {"min_pt": 1.0, "bfield": 2.0}, "vertexing": {"sample": "x"},
         "samples": {"y": {"process": "custom"}, "x": {"shards": 2, "process": "ttbar"}}, "seed": 1}
    assert config_hash(a) == config_hash(b)
    assert config_hash(resolve_config(a)) == config_hash(resolve_config(b))


def test_config_hash_sees_value_changes():
    a = resolve_config(MINIMAL)
    b = copy.deepcopy(a)
    b["tracker"]["resolution"]["d0"]["constant"] = 0.011
    assert config_hash(a) != config_hash(b)
    assert len(config_hash(a)) == 64


def test_sample_names_must_be_identifiers():
    raises_naming({"samples": {"1ttbar": {"process": "ttbar"}}}, "samples", "1ttbar")


# --- resolved configs on disk -----------------------------------------------------------


def test_written_config_loads_back_identically(tmp_path):
    resolved = resolve_config(with_sample(shards=3, jets={"radius": 0.8}))
    path = write_resolved_config(resolved, tmp_path / "sub" / "resolved.yaml")
    assert path.exists()
    assert config_hash(resolved) in path.read_text().splitlines()[0]
    assert load_config(path) == resolved
    assert [p.name for p in path.parent.iterdir()] == ["resolved.yaml"]  # no temporary left


def test_snapshot_is_named_by_content(tmp_path):
    a = resolve_config(MINIMAL)
    b = resolve_config(with_sample(shards=5))
    pa, pa_again, pb = snapshot_config(a, tmp_path), snapshot_config(a, tmp_path), snapshot_config(b, tmp_path)
    assert pa == pa_again and pa != pb
    assert config_hash(without_bookkeeping(a))[:12] in pa.name
    assert load_config(pb) == b


def test_a_new_tracking_uri_or_resume_dir_keeps_the_snapshot_name_and_updates_its_content(tmp_path):
    a = resolve_config(MINIMAL)
    moved = copy.deepcopy(a)
    moved["mlflow"]["tracking_uri"] = "http://mlflow.example.org:5000"
    moved["training"]["resume_dir"] = "/scratch/resume"
    first = snapshot_config(a, tmp_path)
    assert snapshot_config(moved, tmp_path) == first  # same name: no job reruns
    assert load_config(first) == moved  # the jobs read the new settings
    assert snapshot_config(a, tmp_path) == first and load_config(first) == a
    assert a["mlflow"]["tracking_uri"].startswith("sqlite")  # the config itself untouched
    assert without_bookkeeping(moved) == without_bookkeeping(a)
    assert "mlflow" not in without_bookkeeping(a) and "resume_dir" not in without_bookkeeping(a)["training"]


def test_a_snapshot_path_without_writing_leaves_the_directory_alone(tmp_path):
    a = resolve_config(with_sample(shards=4))
    path = snapshot_config(a, tmp_path / "config", write=False)
    assert not (tmp_path / "config").exists()  # what a dry run asks for: the name only
    assert snapshot_config(a, tmp_path / "config") == path and load_config(path) == a  # then written
    moved = copy.deepcopy(a)
    moved["mlflow"]["tracking_uri"] = "http://mlflow.example.org:5000"
    before = path.read_text()
    assert snapshot_config(moved, tmp_path / "config", write=False) == path
    assert path.read_text() == before  # a running job's snapshot is not rewritten


def test_stage_config_is_a_valid_config_of_one_sample():
    resolved = resolve_config({"samples": {"a": {"process": "ttbar"}, "b": {"process": "qcd_dijet"}}})
    stage = stage_config(resolved, "b", "tracker")
    assert set(stage) == {"seed", "samples", "tracker"}
    assert list(stage["samples"]) == ["b"]
    assert resolve_config(stage)["samples"]["b"] == resolved["samples"]["b"]
    # A tracker change alters the tracker stage's config but not the generator stage's.
    changed = copy.deepcopy(resolved)
    changed["tracker"]["bfield"] = 3.0
    assert config_hash(stage_config(changed, "b", "tracker")) != config_hash(stage)
    assert config_hash(stage_config(changed, "b")) == config_hash(stage_config(resolved, "b"))
    with pytest.raises(ConfigError, match="'c'"):
        stage_config(resolved, "c")


# --- vertexing section ---------------------------------------------------------------


def test_vertexing_sample_defaults_to_the_first_sample():
    config = resolve_config({"samples": {"zz": {"process": "ttbar"}, "aa": {"process": "qcd_dijet"}}})
    assert config["vertexing"]["sample"] == "zz"


def test_vertexing_sample_must_exist():
    with pytest.raises(ConfigError, match=r"vertexing.sample: unknown sample 'ttbar', expected one of \['x'\]"):
        resolve_config({"samples": {"x": {"process": "ttbar"}}, "vertexing": {"sample": "ttbar"}})


def test_vertexing_track_range_must_be_ordered():
    with pytest.raises(ConfigError, match=r"vertexing.max_tracks \(3\) is below vertexing.min_tracks \(5\)"):
        resolve_config({"samples": {"x": {"process": "ttbar"}}, "vertexing": {"min_tracks": 5, "max_tracks": 3}})


# --- what the stricter checks still accept ----------------------------------------------


@pytest.mark.parametrize("uri", [
    "sqlite:///results/mlflow.db", "sqlite:////scratch/mlflow.db", "http://127.0.0.1:5000", "https://mlflow.example.org",
    "http://[::1]:5000/mlflow", "postgresql://user@db.example.org/mlflow", "mysql+pymysql://db/mlflow",
    "file:///scratch/mlruns", "file:mlruns", "databricks://profile",
])
def test_tracking_uris_of_every_store_are_accepted(uri):
    assert resolve_config({**MINIMAL, "mlflow": {"tracking_uri": uri}})["mlflow"]["tracking_uri"] == uri


def test_upper_limits_may_be_absent_or_above_the_lower_ones():
    sample = resolve_config(with_sample(pthat_min=500.0, pthat_max=-1, jets={"min_pt": 20.0, "max_pt": -1.0}))["samples"]["ttbar"]
    assert sample["pthat_max"] == -1 and sample["jets"]["max_pt"] == -1.0
    sample = resolve_config(with_sample(pthat_min=500, pthat_max=700, jets={"min_pt": 550, "max_pt": 650}))["samples"]["ttbar"]
    assert (sample["pthat_max"], sample["jets"]["max_pt"]) == (700, 650)


def test_the_largest_counts_are_accepted():
    sample = resolve_config(with_sample(events_per_shard=1_000_000, shards=100_000, batch_size=10_000))["samples"]["ttbar"]
    assert (sample["events_per_shard"], sample["shards"], sample["batch_size"]) == (1_000_000, 100_000, 10_000)


def test_pythia_settings_pythia_reads_as_written_are_accepted():
    from pipeline.simulation.pythia import check_pythia_settings

    settings = ["24:onMode = off", "24:onIfAny = 1 2 3 4 5", "Top:gg2ttbar = on", "HardQCD:all=yes", "Beams:frameType = 1",
                "PhaseSpace:pTHatMin = 2.5e2", "PDF:pSet = 13", "Beams:idAList = 2212,211", "24:mayDecay = off",
                "24:m0 = 80.4", "24:0:onMode = 1", "! a comment"]
    check_pythia_settings(settings)
    assert resolve_config(with_sample(pythia_settings=settings))["samples"]["ttbar"]["pythia_settings"] == settings


def test_vertexing_is_off_without_a_tracked_sample_and_refuses_a_gun():
    gun = {"process": "particle_gun", "gun": {"particles": [{"pdgid": 22, "energy": [1.0, 2.0], "eta": [-0.5, 0.5],
                                                              "phi": [-1.0, 1.0]}]}}
    config = resolve_config({"samples": {"g": gun}})
    assert config["vertexing"]["sample"] is None
    assert [study.name for study in active_studies(config)] == []  # nor flavour tagging, which needs it
    with pytest.raises(ConfigError, match=r"vertexing.sample: 'g' has no track sets \(a particle gun"):
        resolve_config({"samples": {"g": gun, "t": {"process": "ttbar"}}, "vertexing": {"sample": "g"}})
