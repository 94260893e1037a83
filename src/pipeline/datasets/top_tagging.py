"""The Top Quark Tagging Reference Dataset's files (Kasieczka et al., "The Machine Learning
Landscape of Top Taggers", SciPost Phys. 7 (2019) 014; Zenodo record 2603256), read in
chunks with PyTables.

Layout, as the authors' and the field's loaders read it (``pandas.read_hdf(path, "table")``):
a pandas HDFStore with key ``table``, one row per jet, columns ``E_i, PX_i, PY_i, PZ_i``
(GeV) for constituents i = 0..199 ordered by pT and zero-padded, ``truthE, truthPX,
truthPY, truthPZ``, ``ttv`` and the label ``is_signal_new`` (1 top, 0 QCD). pandas stores
such a frame in one of two layouts, and which one the published files use is not written
down: ``format="table"`` (a PyTables table ``/table/table`` whose ``values_block_k``
columns hold the frame's columns, named in the ``values_block_k_kind`` attributes) or the
default ``format="fixed"`` (arrays ``/table/block{k}_values``, named by
``/table/block{k}_items``). Both are read, through PyTables so that any of its
compression filters works, straight into NumPy: no DataFrame is built, and a chunk of rows
is all that is held in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

KEY = "table"
LABEL = "is_signal_new"
#: Columns per constituent, in the order of the (..., 4) arrays ``read`` returns.
MOMENTUM = ("E", "PX", "PY", "PZ")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TopTaggingFile:
    """One file of the data set. Opening it checks the layout: key ``table``, the four
    momentum columns of every constituent (floating point), ``is_signal_new`` (integer or
    floating point), at least one jet; ValueError naming the file and the key otherwise.

    ``n_jets``, ``n_constituents``; ``read(start, stop)`` -> (p4 (n, n_constituents, 4)
    float32 [E, px, py, pz] in GeV, label (n,) int8).
    """

    def __init__(self, path: str | Path):
        import tables  # here: the config and the Snakefile import the package, not PyTables

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such file")
        try:
            self._file = tables.open_file(str(self.path), "r")
        except Exception as error:  # PyTables raises HDF5ExtError, OSError, ... for a non-HDF5 file
            raise ValueError(f"{self.path}: not an HDF5 file ({type(error).__name__}: {error})") from None
        try:
            self._columns, self.n_jets = self._layout()
            self._check()
        except Exception:
            self._file.close()
            raise

    def _layout(self) -> tuple[dict[str, tuple[str, int]], int]:
        """{column: (array, position)} and the number of rows, for either pandas layout."""
        if f"/{KEY}" not in self._file:
            found = sorted(node._v_name for node in self._file.root._f_iter_nodes())
            raise ValueError(f"{self.path}: no key {KEY!r} (the data set's files are pandas HDFStores with key "
                             f"{KEY!r}); found {found}")
        group = self._file.get_node(f"/{KEY}")
        kind = _text(getattr(group._v_attrs, "pandas_type", ""))
        columns: dict[str, tuple[str, int]] = {}
        if kind == "frame_table":
            table = self._file.get_node(f"/{KEY}/table")
            for field in table.colnames:
                if field == "index":
                    continue
                # A block of columns names them in <field>_kind; a data column is its own name.
                names = getattr(table.attrs, f"{field}_kind", None)
                for position, name in enumerate(names if isinstance(names, (list, tuple)) else [field]):
                    columns[_text(name)] = (f"/{KEY}/table:{field}", position)
            return columns, table.nrows
        if kind == "frame":
            n_rows = None
            for block in range(int(group._v_attrs.nblocks)):
                values = self._file.get_node(f"/{KEY}/block{block}_values")
                items = self._file.get_node(f"/{KEY}/block{block}_items").read()
                for position, name in enumerate(items):
                    columns[_text(name)] = (values._v_pathname, position)
                n_rows = values.shape[0] if len(values.shape) == 2 else 0
            return columns, n_rows or 0
        raise ValueError(f"{self.path}: key {KEY!r} is not a pandas DataFrame (pandas_type {kind!r}, expected "
                         "'frame_table' or 'frame')")

    def _check(self) -> None:
        missing = [name for name in (*(f"{q}_0" for q in MOMENTUM), LABEL) if name not in self._columns]
        if missing:
            raise ValueError(f"{self.path}: key {KEY!r} has no column {missing[0]!r} (expected E_i, PX_i, PY_i, PZ_i "
                             f"per constituent and {LABEL!r})")
        n = 0
        while f"E_{n}" in self._columns:
            n += 1
        for i in range(n):
            for q in MOMENTUM:
                if f"{q}_{i}" not in self._columns:
                    raise ValueError(f"{self.path}: key {KEY!r} has E_{i} but no column {q}_{i}")
        self.n_constituents = n
        for name in (*(f"{q}_{i}" for i in range(n) for q in MOMENTUM), LABEL):
            kind = self._dtype(name).kind
            wanted = "f" if name != LABEL else "fiu"
            if kind not in wanted:
                raise ValueError(f"{self.path}: key {KEY!r}, column {name!r}: dtype {self._dtype(name)}, expected "
                                 + ("floating point (GeV)" if name != LABEL else "an integer or floating-point 0/1"))
        if self.n_jets == 0:
            raise ValueError(f"{self.path}: key {KEY!r} holds no jets")
        # Where each column sits: per array, the positions of the constituents' momenta.
        self._p4_array = {self._columns[f"{q}_{i}"][0] for i in range(n) for q in MOMENTUM}
        if len(self._p4_array) != 1:  # pandas puts all float32 columns in one block
            raise ValueError(f"{self.path}: key {KEY!r}: the constituents' momenta are split over "
                             f"{len(self._p4_array)} blocks of different dtypes; expected one")
        self._p4_positions = np.array([[self._columns[f"{q}_{i}"][1] for q in MOMENTUM] for i in range(n)])

    def _dtype(self, name: str) -> np.dtype:
        array, _ = self._columns[name]
        node = self._node(array)
        return node.coldtypes[array.split(":")[1]].base if ":" in array else node.dtype

    def _node(self, array: str):
        return self._file.get_node(array.split(":")[0])

    def _read_array(self, array: str, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of one array: (n, columns)."""
        if ":" in array:
            values = self._node(array).read(start, stop, field=array.split(":")[1])
        else:
            values = self._node(array)[start:stop]
        return values.reshape(len(values), -1)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Jets start:stop: constituent four-momenta (n, n_constituents, 4) float32 (E, px,
        py, pz; zero rows are padding) and labels (n,) int8 (1 top, 0 QCD). ValueError
        naming the file, the column and the row for a label that is not 0 or 1."""
        stop = min(stop, self.n_jets)
        (array,) = self._p4_array
        p4 = self._read_array(array, start, stop)[:, self._p4_positions].astype(np.float32, copy=False)
        label_array, position = self._columns[LABEL]
        label = self._read_array(label_array, start, stop)[:, position]
        bad = np.flatnonzero((label != 0) & (label != 1))
        if len(bad):
            raise ValueError(f"{self.path}: key {KEY!r}, column {LABEL!r}: {label[bad[0]].item()!r} in row "
                             f"{start + bad[0]}, expected 0 (QCD) or 1 (top)")
        return p4, label.astype(np.int8)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TopTaggingFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
