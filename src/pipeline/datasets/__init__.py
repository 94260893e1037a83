"""The papers' public data sets as inputs: a sample whose ``source`` is a directory of the
authors' files instead of a generator (``samples.<name>.source: {format, path}``).

Each format names the authors' files per split, how the study that reads it converts them
into our own versioned HDF5, and the reader of its layout (``top_tagging``: pandas HDFStore
read with PyTables; ``set2graph``: ROOT TTree read with uproot). The readers check the
layout of every file when they open it (the key or tree, every column or branch they read,
its dtype, at least one jet), so a wrong file is refused with its path and key before any
work; the workflow checks every file of every file sample when it starts
(``check_sources``). Nothing is downloaded: the user fetches the files (docs/public_datasets.md).

This module imports neither PyTables nor uproot: the Snakefile and the config read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Mapping

from pipeline.config_schema import ConfigError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PublicDataset:
    """One public data set's layout.

    ``files``: {split: file name} as the authors name them, in the source directory;
    ``reader``: ``pipeline.datasets.<module>.<class>``, whose constructor checks a file's layout;
    ``study``: the study that reads such a sample (and converts it into its own format).
    """

    name: str
    title: str
    reference: str
    files: Mapping[str, str]
    reader: str
    study: str

    def label(self, path: str | Path) -> str:
        """The data set's name as tables and MLflow runs quote it."""
        return f"{self.title} ({self.reference}), {path}"

    def open(self, path: str | Path):
        """A reader of one file of this data set (its layout checked on open)."""
        module, name = self.reader.rsplit(".", 1)
        return getattr(import_module(f"pipeline.datasets.{module}"), name)(path)


DATASETS = {
    "top_tagging": PublicDataset(
        "top_tagging", "Top Quark Tagging Reference Dataset",
        "Kasieczka et al., SciPost Phys. 7 (2019) 014; Zenodo record 2603256",
        {"train": "train.h5", "val": "val.h5", "test": "test.h5"}, "top_tagging.TopTaggingFile", "jet_images"),
    "set2graph": PublicDataset(
        "set2graph", "Set2Graph secondary-vertex jets",
        "Shlomi et al., EPJC 81 (2021) 540; Zenodo record 4044628",
        {"train": "training_data.root", "val": "valid_data.root", "test": "test_data.root"},
        "set2graph.Set2GraphFile", "vertexing"),
}


def dataset(sample: Mapping[str, Any]) -> PublicDataset | None:
    """The public data set of a resolved sample's settings, None for a generated sample."""
    source = sample.get("source")
    return None if source is None else DATASETS[source["format"]]


def file_samples(config: Mapping[str, Any], study: str | None = None) -> list[str]:
    """The samples read from public files (those of ``study``'s formats only, if given)."""
    return [name for name, sample in config["samples"].items()
            if dataset(sample) is not None and (study is None or dataset(sample).study == study)]


def source_files(sample: Mapping[str, Any]) -> dict[str, Path]:
    """{split: path} of a file sample's files: the authors' file names in ``source.path``."""
    found = dataset(sample)
    if found is None:
        raise ValueError("not a file sample: it has no `source`")
    return {split: Path(sample["source"]["path"]) / name for split, name in found.files.items()}


def describe(config: Mapping[str, Any], sample: str) -> str:
    """What a table made from ``sample`` was made from: the public data set's name and
    directory, or the generated sample's name."""
    found = dataset(config["samples"][sample])
    return found.label(config["samples"][sample]["source"]["path"]) if found else f"simulation, sample {sample}"


def check_sources(config: Mapping[str, Any], source: str = "config") -> None:
    """Open every file of every file sample with its reader, which checks its layout: a
    missing file, another layout, a missing column or branch, a wrong dtype, an empty file
    stop the run here, before any job, with the file and the key named."""
    for name in file_samples(config):
        found = dataset(config["samples"][name])
        for path in source_files(config["samples"][name]).values():
            try:
                found.open(path).close()
            except ValueError as error:
                raise ConfigError(f"{source}: samples.{name} ({found.name}): {error}") from None
