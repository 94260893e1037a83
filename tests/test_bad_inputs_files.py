"""Bad inputs and failing outputs, in one table: each gives one error line that names the
file and says what is wrong, through the readers and through the `pipeline` command.

Most rows damage a small file of the test schema (tests/test_h5io.py); a few run real
stages on the session's tiny data set, two of them against a real full disk: a file-size
limit (RLIMIT_FSIZE) makes writes fail with EFBIG, "File too large", as ENOSPC would.
The checkpoint rows give the studies' evaluate steps (and score-edges) a checkpoint that is
not what its name on the command line says: each is refused before any output is written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import lightning
import numpy as np
import pytest
import torch
import yaml
from test_h5io import SCHEMA, batch, limited_file_size, write_file

from pipeline.cli import main
from pipeline.io.hdf5 import DataFileError, FileSchema, RaggedReader, read_tree
from pipeline.ml.checkpoints import IDENTITY_KEY, RUN_ID_KEY
from pipeline.simulation import formats
from pipeline.simulation.formats import TRACK_JETS


@dataclasses.dataclass
class Fault:
    """A `pipeline` command that must fail with one line naming ``path``."""

    argv: list[str]
    path: Path
    #: Also read the file with RaggedReader against this schema: a DataFileError naming it.
    schema: FileSchema | None = None
    #: Run the command in a subprocess whose files may not grow beyond this many bytes.
    fsize: int | None = None
    #: Outputs that must not exist afterwards (nor temporary files beside them).
    outputs: tuple[Path, ...] = ()
    #: The command as its errors name it ("vertexing evaluate"); default the first argument.
    command: str | None = None


@dataclasses.dataclass
class Place:
    tmp: Path
    real: dict  # {"particle_jets": path, "track_jets": path, "config": path, "graphs_<split>": path}

    def good(self) -> Path:
        """A fresh good file of the test schema: 5 events with 2, 0, 3, 1, 4 hits."""
        return write_file(self.tmp / "good.h5", [batch([0, 1, 2], [2, 0, 3]), batch([3, 4], [1, 4])])

    def copy(self, kind: str) -> Path:
        """A copy of the session's real file of that kind, to damage."""
        return Path(shutil.copy(self.real[kind], self.tmp / f"{kind}.h5"))


def inspect(path: Path, schema: FileSchema = SCHEMA) -> Fault:
    return Fault(["inspect", str(path)], path, schema=schema)


def edited(edit):
    """A row's maker: the good test file, edited in place with h5py."""
    def make(place: Place) -> Fault:
        path = place.good()
        with h5py.File(path, "r+") as f:
            edit(f)
        return inspect(path)
    return make


def replaced(name: str, data):
    """The good test file with dataset ``name`` replaced by ``data``."""
    def edit(f):
        del f[name]
        f.create_dataset(name, data=np.asarray(data))
    return edited(edit)


def set_attr(name: str, value):
    def edit(f):
        f.attrs[name] = value
    return edited(edit)


def del_attr(name: str):
    def edit(f):
        del f.attrs[name]
    return edited(edit)


def overwritten(path: Path, offset: int, size: int) -> Path:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    return path


def damaged_header(name: str):
    """The good test file with the object header of group or dataset ``name`` overwritten."""
    def make(place: Place) -> Fault:
        path = place.good()
        with h5py.File(path, "r") as f:
            address = h5py.h5o.get_info(f[name].id).addr
        return inspect(overwritten(path, address, 16))
    return make




def truncated(place: Place) -> Fault:
    path = place.good()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return inspect(path)


def text_file(place: Place) -> Fault:
    path = place.tmp / "text.h5"
    path.write_text("this is not HDF5\n" * 100)
    return inspect(path)


def plain_hdf5(**attrs):
    """An HDF5 file of someone else's, with these file attributes."""
    def make(place: Place) -> Fault:
        path = place.tmp / "plain.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=np.arange(5))
            f.attrs.update(attrs)
        return inspect(path)
    return make


def other_schema(place: Place) -> Fault:
    path = write_file(place.tmp / "other.h5", [batch([0], [1])], schema=dataclasses.replace(SCHEMA, name="other_schema"))
    return inspect(path)


def missing_file(place: Place) -> Fault:
    return inspect(place.tmp / "absent.h5")


def directory(place: Place) -> Fault:
    path = place.tmp / "directory.h5"
    path.mkdir()
    return inspect(path)


def real_edited(kind: str, edit):
    """The session's real file of that kind, copied and edited; inspected."""
    def make(place: Place) -> Fault:
        path = place.copy(kind)
        with h5py.File(path, "r+") as f:
            edit(f)
        return inspect(path, TRACK_JETS)
    return make


def past_the_data(f):
    f["tracks/offsets"][-1] = f["tracks/offsets"][-1] + 1


def garbage_config(f):
    f.attrs["config"] = "{'seed': 1"


def tracker(place: Place, *, source: Path | None = None, output: Path | None = None, fsize: int | None = None) -> Fault:
    source = source if source is not None else place.real["particle_jets"]
    output = output if output is not None else place.tmp / "out" / "tracks.h5"
    argv = ["simulate-tracker", "--config", str(place.real["config"]), "--input", str(source),
            "--output", str(output), "--quiet"]
    return Fault(argv, output, fsize=fsize, outputs=(output,) if not output.is_dir() else ())


def full_disk_tracker(place: Place) -> Fault:
    return tracker(place, fsize=100_000)


def split(place: Place, source: Path, fsize: int | None = None) -> Fault:
    out = place.tmp / "splits"
    outputs = tuple(out / f"{name}.h5" for name in ("train", "val", "test"))
    argv = ["split", "--config", str(place.real["config"]), "--sample", "tiny", "--inputs", str(source),
            "--train", str(outputs[0]), "--val", str(outputs[1]), "--test", str(outputs[2])]
    return Fault(argv, source, schema=TRACK_JETS, fsize=fsize, outputs=outputs)


def full_disk_split(place: Place) -> Fault:
    fault = split(place, place.real["track_jets"], fsize=150_000)
    # Any of the three outputs may be the first to fill the disk.
    return dataclasses.replace(fault, path=place.tmp / "splits", schema=None)


def damaged_chunk(place: Place) -> Fault:
    """A compressed chunk of track data overwritten: the file opens, reading its rows fails."""
    path = place.copy("track_jets")
    with h5py.File(path, "r") as f:
        chunk = f["tracks/d0"].id.get_chunk_info(0)
    return split(place, overwritten(path, chunk.byte_offset, chunk.size))


def damaged_training_input(place: Place) -> Fault:
    """A compressed chunk of track features overwritten in a training file: the file opens and
    its schema checks, the training fails at its first read of those rows."""
    path = Path(shutil.copy(place.real["graphs_train"], place.tmp / "graphs_train.h5"))
    with h5py.File(path, "r") as f:
        chunk = f["tracks/features"].id.get_chunk_info(0)
    config, _ = study_config(place)
    out = place.tmp / "models"
    argv = ["vertexing", "train", "--config", str(config), "--method", "set2graph", "--train", str(path),
            "--val", str(place.real["graphs_val"]), "--checkpoint", str(out / "set2graph.ckpt"),
            "--history", str(out / "history.csv"), "--quiet"]
    overwritten(path, chunk.byte_offset, chunk.size)
    return Fault(argv, path, outputs=(out / "set2graph.ckpt", out / "history.csv"), command="vertexing train")


def missing_input(place: Place) -> Fault:
    fault = tracker(place, source=place.tmp / "absent.h5")
    return dataclasses.replace(fault, path=place.tmp / "absent.h5")


def directory_input(place: Place) -> Fault:
    (place.tmp / "in.h5").mkdir()
    fault = tracker(place, source=place.tmp / "in.h5")
    return dataclasses.replace(fault, path=place.tmp / "in.h5")


def directory_output(place: Place) -> Fault:
    (place.tmp / "out.h5").mkdir()
    return tracker(place, output=place.tmp / "out.h5")


def output_below_a_file(place: Place) -> Fault:
    (place.tmp / "notes.txt").write_text("a file, not a directory")
    fault = tracker(place, output=place.tmp / "notes.txt" / "tracks.h5")
    return dataclasses.replace(fault, path=place.tmp / "notes.txt", outputs=())


def unwritable_output_directory(place: Place) -> Fault:
    out = place.tmp / "readonly"
    out.mkdir()
    out.chmod(0o555)
    return tracker(place, output=out / "tracks.h5")


# Checkpoints: modules of the session's config, saved as `fit_and_export` saves them.


def study_config(place: Place, **sections) -> tuple[Path, dict]:
    """(file, resolved config): the session's config with its MLflow store and its trainings'
    resume directory in the test's directory and ``sections`` replaced (the resolved one is what the steps read)."""
    from pipeline.run_config import load_config

    config = yaml.safe_load(place.real["config"].read_text())
    config["mlflow"] = {**config["mlflow"], "tracking_uri": f"sqlite:///{place.tmp}/mlflow.db"}
    config["training"] = {**config.get("training", {}), "resume_dir": str(place.tmp / "resume")}
    config.update(sections)
    path = place.tmp / f"config{len(list(place.tmp.glob('config*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, load_config(path)


def saved(module, identity: dict | None, path: Path) -> Path:
    """A checkpoint of ``module`` recording ``identity`` (None: none, as before they did)."""
    state = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
             "pytorch-lightning_version": lightning.__version__, RUN_ID_KEY: "0" * 32}
    if identity is not None:
        state[IDENTITY_KEY] = identity
    torch.save(state, path)
    return path


def vertex_finder(config: dict, method: str, path: Path, identity: bool = True) -> Path:
    from default_config import default_optimiser

    from pipeline.studies.vertexing.formats import TRACK_FEATURES
    from pipeline.studies.vertexing.models import VertexFinder
    from pipeline.studies.vertexing.train import vertex_finder_identity

    module = VertexFinder(method, len(TRACK_FEATURES), config["vertexing"]["network"],
                          threshold=config["vertexing"]["threshold"], **default_optimiser())
    return saved(module, vertex_finder_identity(config, method) if identity else None, path)


def vertexing_evaluate(place: Place, config: Path, checkpoints: dict[str, Path], culprit: Path) -> Fault:
    out = place.tmp / "vertexing"
    argv = ["vertexing", "evaluate", "--config", str(config), "--test", str(place.tmp / "absent.h5"),
            "--output-dir", str(out), *(f"--checkpoint={m}={p}" for m, p in checkpoints.items())]
    return Fault(argv, culprit, outputs=(out,), command="vertexing evaluate")


def vertex_finders(place: Place, config: dict) -> dict[str, Path]:
    from pipeline.studies.vertexing.methods import LEARNED

    return {m: vertex_finder(config, m, place.tmp / f"{m}.ckpt") for m in LEARNED}


def vertexing_other_method(place: Place) -> Fault:
    # `--checkpoint rnn=set2graph.ckpt`: the RNN's row would be Set2Graph's numbers.
    path, config = study_config(place)
    checkpoints = vertex_finders(place, config)
    checkpoints["rnn"] = checkpoints["set2graph"]
    return vertexing_evaluate(place, path, checkpoints, checkpoints["set2graph"])


def vertexing_other_widths(place: Place) -> Fault:
    path, config = study_config(place)
    checkpoints = vertex_finders(place, config)
    other = {**config, "vertexing": {**config["vertexing"],
                                     "network": {**config["vertexing"]["network"], "set_widths": [8, 8]}}}
    checkpoints["set2graph"] = vertex_finder(other, "set2graph", place.tmp / "narrow.ckpt")
    return vertexing_evaluate(place, path, checkpoints, checkpoints["set2graph"])


def vertexing_extra_name(place: Place) -> Fault:
    path, config = study_config(place)
    checkpoints = {**vertex_finders(place, config), "foo": place.tmp / "foo.ckpt"}
    return vertexing_evaluate(place, path, checkpoints, checkpoints["foo"])


def vertexing_without_identity(place: Place) -> Fault:
    path, config = study_config(place)
    checkpoints = vertex_finders(place, config)
    checkpoints["rnn"] = vertex_finder(config, "rnn", place.tmp / "old_rnn.ckpt", identity=False)
    return vertexing_evaluate(place, path, checkpoints, checkpoints["rnn"])


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def vertexing_legacy_pickle(place: Place) -> Fault:
    # torch's legacy (non-zip) format with pickle protocol 4, which the restricted unpickler
    # stops at before it reaches the global.
    path, config = study_config(place)
    checkpoints = vertex_finders(place, config)
    checkpoints["rnn"] = place.tmp / "legacy.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": _RunsCode(place.tmp / "code-ran")}},
               checkpoints["rnn"], _use_new_zipfile_serialization=False, pickle_protocol=4)
    return vertexing_evaluate(place, path, checkpoints, checkpoints["rnn"])


def score_edges_other_widths(place: Place) -> Fault:
    path, config = study_config(place)
    other = {**config, "vertexing": {**config["vertexing"], "network": {**config["vertexing"]["network"],
                                                                        "edge_widths": [8]}}}
    checkpoint = vertex_finder(other, "set2graph", place.tmp / "set2graph.ckpt")
    absent, out = str(place.tmp / "absent.h5"), {s: place.tmp / f"edges_{s}.h5" for s in ("train", "val", "test")}
    argv = ["flavour_tagging", "score-edges", "--config", str(path), "--method", "set2graph",
            "--checkpoint", str(checkpoint), "--train", absent, "--val", absent, "--test", absent,
            *(a for s, p in out.items() for a in (f"--out-{s}", str(p)))]
    return Fault(argv, checkpoint, outputs=tuple(out.values()), command="flavour_tagging score-edges")


def flavour_evaluate(place: Place, rows) -> Fault:
    """flavour_tagging evaluate with every tagger of the config, changed by ``rows``(checkpoints) -> culprit."""
    from default_config import default_optimiser

    from pipeline.studies.flavour_tagging.methods import METHODS
    from pipeline.studies.flavour_tagging.models import FlavourTagger
    from pipeline.studies.flavour_tagging.train import tagger_identity
    from pipeline.studies.vertexing.formats import TRACK_FEATURES

    path, config = study_config(place)
    study = config["flavour_tagging"]
    checkpoints = {}
    for method in METHODS:
        module = FlavourTagger(len(TRACK_FEATURES), study["width"], study["message_layers"], study["readout_widths"],
                               **default_optimiser())
        checkpoints[method] = [saved(module, tagger_identity(config, method), place.tmp / f"{method}_seed{seed}.ckpt")
                               for seed in range(study["seeds"])]
    culprit = rows(checkpoints)
    out = place.tmp / "flavour"
    argv = ["flavour_tagging", "evaluate", "--config", str(path), "--test", str(place.tmp / "absent.h5"),
            "--output-dir", str(out), *(f"--checkpoint={m}={p}" for m, paths in checkpoints.items() for p in paths),
            *(f"--edges={m}={place.tmp / 'absent_edges.h5'}" for m in METHODS[1:])]
    return Fault(argv, culprit, outputs=(out,), command="flavour_tagging evaluate")


def flavour_other_finder(place: Place) -> Fault:
    # `--checkpoint set2graph=rnn_seed0.ckpt`: a tagger trained on the RNN's edges.
    def swap(checkpoints):
        checkpoints["set2graph"] = checkpoints["rnn"]
        return checkpoints["rnn"][0]
    return flavour_evaluate(place, swap)


def flavour_extra_name(place: Place) -> Fault:
    def extra(checkpoints):
        checkpoints["foo"] = [place.tmp / "foo.ckpt"]
        return checkpoints["foo"][0]
    return flavour_evaluate(place, extra)


def jet_images_evaluate(place: Place, change) -> Fault:
    """jet_images evaluate with every model of the config, changed by ``change``(place, config, checkpoints) -> culprit."""
    from pipeline.studies.jet_images.methods import METHODS
    from pipeline.studies.jet_images.train import build_model, model_identity

    path, config = study_config(place)
    checkpoints = {name: saved(build_model(config, name), model_identity(config, name), place.tmp / f"{name}.ckpt")
                   for name in METHODS}
    culprit = change(config, checkpoints)
    out = place.tmp / "images"
    argv = ["jet_images", "evaluate", "--config", str(path), "--test", str(place.tmp / "absent.h5"),
            "--output-dir", str(out), *(f"--checkpoint={m}={p}" for m, p in checkpoints.items())]
    return Fault(argv, culprit, outputs=(out,), command="jet_images evaluate")


def jet_images_other_channels(place: Place) -> Fault:
    from pipeline.studies.jet_images.train import build_model, model_identity

    def narrow(config, checkpoints):
        images = config["jet_images"]
        other = {**config, "jet_images": {**images, "cnn": {**images["cnn"], "channels": [2]}}}
        checkpoints["cnn"] = saved(build_model(other, "cnn"), model_identity(other, "cnn"), place.tmp / "narrow.ckpt")
        return checkpoints["cnn"]
    return jet_images_evaluate(place, narrow)


def jet_images_extra_name(place: Place) -> Fault:
    def extra(config, checkpoints):
        checkpoints["foo"] = place.tmp / "foo.ckpt"
        return checkpoints["foo"]
    return jet_images_evaluate(place, extra)


def super_resolution_given_particle_flow(place: Place) -> Fault:
    from pipeline.studies.particle_flow import train as particle_flow
    from pipeline.studies.super_resolution import train as super_resolution
    from pipeline.studies.super_resolution.methods import LEARNED

    path, config = study_config(place)
    checkpoints = {m: saved(super_resolution.build_model(config, m), super_resolution.network_identity(config, m),
                            place.tmp / f"{m}.ckpt") for m in LEARNED}
    checkpoints["cnn"] = saved(particle_flow.build_model(config, "cnn"), particle_flow.network_identity(config, "cnn"),
                               place.tmp / "particle_flow_cnn.ckpt")
    out = place.tmp / "super_resolution"
    argv = ["super_resolution", "evaluate", "--config", str(path), "--test", str(place.tmp / "absent.h5"),
            "--pi0-test", str(place.tmp / "absent_pi0.h5"), "--output-dir", str(out),
            *(f"--checkpoint={m}={p}" for m, p in checkpoints.items())]
    return Fault(argv, checkpoints["cnn"], outputs=(out,), command="super_resolution evaluate")


AS_USER = pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")

# (id, maker of the fault, what the message must say besides the path[, marks])
CASES = [
    ("missing file", missing_file, "file not found"),
    ("directory instead of a file", directory, "is a directory"),
    ("truncated", truncated, "not a readable HDF5 file"),
    ("not HDF5", text_file, "not a readable HDF5 file"),
    ("HDF5 without schema", plain_hdf5(), "not a pipeline file"),
    ("foreign schema attribute, no version", plain_hdf5(schema="sky_catalogue"), "not a pipeline file"),
    ("schema without version", del_attr("schema_version"), "not a pipeline file"),
    ("non-integer version", set_attr("schema_version", "3"), "is not an integer"),
    ("fractional version", set_attr("schema_version", 3.5), "is not an integer"),
    ("other schema", other_schema, "other_schema"),
    ("newer version", set_attr("schema_version", SCHEMA.version + 1), "is newer"),
    ("older version", set_attr("schema_version", SCHEMA.version - 1), "is older"),
    ("incomplete", del_attr("complete"), "incomplete file"),
    ("missing collection", edited(lambda f: f.__delitem__("hits")), "lacks collection 'hits'"),
    ("missing field", edited(lambda f: f["hits"].__delitem__("layer")), "lacks fields ['layer']"),
    ("fields of unequal length", replaced("hits/layer", np.zeros(9, "i1")), "differ in length"),
    ("2-d rows where 1-d are declared", replaced("hits/x", np.zeros((10, 2), "f4")), "expected (rows)"),
    ("offsets missing", edited(lambda f: f["hits"].__delitem__("offsets")), "lacks hits/offsets"),
    ("offsets not integer", replaced("hits/offsets", [0.0, 2, 2, 5, 6, 10]), "expected 1-d integers"),
    ("offsets too short", replaced("hits/offsets", [0, 2, 5, 6, 10]), "has 5 entries, expected 6"),
    ("offsets not starting at 0", replaced("hits/offsets", [1, 2, 2, 5, 6, 10]), "starts at 1, expected 0"),
    ("offsets decreasing", replaced("hits/offsets", [0, 2, 1, 5, 6, 10]), "decreases at entry 2"),
    ("offsets ending beyond the data", replaced("hits/offsets", [0, 2, 2, 5, 6, 11]), "ends at 11, but hits has 10 rows"),
    ("offsets ending before the data", replaced("hits/offsets", [0, 2, 2, 5, 6, 9]), "ends at 9, but hits has 10 rows"),
    ("damaged group header", damaged_header("hits"), "damaged file"),
    ("damaged dataset header", damaged_header("hits/x"), "damaged file"),
    ("config not JSON", set_attr("config", "{'seed': 1"), "'config' attribute is not JSON"),
    ("config not an object", set_attr("config", "[1, 2]"), "'config' attribute is a JSON list"),
    ("real file: offsets beyond the data", real_edited("track_jets", past_the_data), "tracks/offsets ends at"),
    ("real file: config not JSON", real_edited("track_jets", garbage_config), "'config' attribute is not JSON"),
    ("tracker: missing input", missing_input, "file not found"),
    ("tracker: input is a directory", directory_input, "is a directory"),
    ("tracker: output is a directory", directory_output, "Is a directory"),
    ("tracker: output below a file", output_below_a_file, "Not a directory"),
    ("tracker: unwritable output directory", unwritable_output_directory, "Permission denied", AS_USER),
    ("tracker: full disk", full_disk_tracker, "File too large"),
    ("split: damaged data chunk", damaged_chunk, "reading tracks rows"),
    ("vertexing train: damaged data chunk", damaged_training_input,
     "failed (Can't synchronously read data (filter returned failure during read)); the file may be damaged"),
    ("split: full disk", full_disk_split, "File too large"),
    ("vertexing evaluate: rnn given set2graph's checkpoint", vertexing_other_method,
     "holds the vertexing study's 'set2graph' model, but was given as the vertexing study's 'rnn' model"),
    ("vertexing evaluate: set2graph of other widths", vertexing_other_widths,
     "set_widths = [8, 8] in the checkpoint, [128, 128, 64] in the config"),
    ("vertexing evaluate: unknown checkpoint name", vertexing_extra_name, "unexpected ['foo']"),
    ("vertexing evaluate: checkpoint without identity", vertexing_without_identity,
     "records no identity (study, method, network settings)"),
    ("vertexing evaluate: legacy pickle that runs code", vertexing_legacy_pickle,
     "(it names io.open); unpickling it would run code it contains. Checkpoints written by `pipeline <study> train`"),
    ("score-edges: finder of other widths", score_edges_other_widths,
     "edge_widths = [8] in the checkpoint, [256, 256] in the config"),
    ("flavour_tagging evaluate: set2graph given the rnn tagger", flavour_other_finder,
     "holds the flavour_tagging study's 'rnn' model (vertex_finder 'rnn'), but was given as the flavour_tagging "
     "study's 'set2graph' model (vertex_finder 'set2graph')"),
    ("flavour_tagging evaluate: unknown checkpoint name", flavour_extra_name, "unexpected ['foo']"),
    ("jet_images evaluate: cnn of other channels", jet_images_other_channels,
     "channels = [2] in the checkpoint"),
    ("jet_images evaluate: unknown checkpoint name", jet_images_extra_name, "unexpected ['foo']"),
    ("super_resolution evaluate: a particle-flow checkpoint", super_resolution_given_particle_flow,
     "holds the particle_flow study's 'cnn' model, but was given as the super_resolution study's 'cnn' model"),
]


@pytest.fixture(scope="module")
def real_files(tmp_path_factory, tiny_files, tiny_config_session, track_graphs) -> dict:
    config = tmp_path_factory.mktemp("bad_inputs") / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config_session))
    return {**tiny_files, "config": config, **{f"graphs_{split}": path for split, path in track_graphs.items()}}


def read_everything(path: Path, schema: FileSchema) -> None:
    with RaggedReader(path, schema) as reader:
        reader.config
        read_tree(reader, 0, reader.n_rows(schema.collections[0].name))


def run_pipeline(fault: Fault, capsys) -> tuple[int, str]:
    """(exit status, stderr) of the command: in a subprocess if it needs a file-size limit."""
    if fault.fsize is None:
        capsys.readouterr()
        status = main(fault.argv)
        return status, capsys.readouterr().err
    result = subprocess.run([sys.executable, "-m", "pipeline", *fault.argv], capture_output=True, text=True,
                            timeout=300, preexec_fn=limited_file_size(fault.fsize))
    return result.returncode, result.stderr


@pytest.mark.parametrize("make, fragment", [pytest.param(*row[1:3], id=row[0], marks=row[3:]) for row in CASES])
def test_bad_input_gives_one_line_naming_the_file(make, fragment, tmp_path, real_files, monkeypatch, capsys):
    # `pipeline inspect` knows the test schema too.
    monkeypatch.setitem(formats.SCHEMAS, SCHEMA.name, SCHEMA)
    fault = make(Place(tmp_path, real_files))
    if fault.schema is not None:
        with pytest.raises(DataFileError) as info:
            read_everything(fault.path, fault.schema)
        assert str(fault.path) in str(info.value) and fragment in str(info.value), str(info.value)

    status, stderr = run_pipeline(fault, capsys)

    assert status == 2, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    command = fault.command or fault.argv[0]
    errors = [line for line in stderr.splitlines() if line.startswith(f"pipeline {command}: error: ")]
    assert len(errors) == 1 and errors[0] == stderr.splitlines()[-1], stderr
    assert str(fault.path) in errors[0] and fragment in errors[0], errors[0]
    for output in fault.outputs:
        assert not output.exists(), output
        if output.parent.is_dir():
            assert not [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.stem}.tmp")]
