"""The vocabulary of the pipeline's HDF5 files: a schema is named and versioned and holds
collections, each a group of 1-d fields (one row per entry), a child collection indexed by
its parent's offsets; and the error every reader raises for a file it cannot use."""

from __future__ import annotations

from dataclasses import dataclass


class DataFileError(OSError):
    """A file that cannot be read as the expected pipeline format; the message names it."""


@dataclass(frozen=True)
class Field:
    """One dataset of a collection: one row per collection entry, ``shape`` per row."""

    name: str
    dtype: str
    unit: str
    description: str
    shape: tuple[int, ...] = ()
    #: Whether the dataset is gzip-compressed; fields read at training speed may opt out.
    compressed: bool = True


def fields(*rows: tuple[str, str, str, str]) -> tuple[Field, ...]:
    """Fields from (name, dtype, unit, description) rows: the compact way schemas list them."""
    return tuple(Field(*row) for row in rows)


@dataclass(frozen=True)
class Collection:
    name: str
    parent: str | None
    fields: tuple[Field, ...]
    description: str = ""

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


@dataclass(frozen=True)
class FileSchema:
    name: str
    version: int
    collections: tuple[Collection, ...]
    description: str = ""

    def collection(self, name: str) -> Collection:
        for collection in self.collections:
            if collection.name == name:
                return collection
        raise KeyError(f"schema {self.name!r} has no collection {name!r}")
