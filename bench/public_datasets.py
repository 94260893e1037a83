"""The top-tagging reference data set's reader against ``pandas.read_hdf`` of the same file,
side by side: jets per second from the authors' HDFStore to our jet_images HDF5, and the
peak memory of each, on files of 100k and 400k jets in the reference layout.

    python bench/public_datasets.py [--jets 100000 400000] [--layout table] [--dir DIR]

The files are written once by ``pipeline.tiny.write_top_tagging_files`` (synthetic jets, the
authors' columns and pandas layout: ``table``, as pandas appends it, or ``fixed``) into
``--dir`` (default: a temporary directory) and reused when there. Each measurement runs in
a fresh Python process, which reports its own peak resident memory (VmHWM: not ru_maxrss,
which Linux carries over from the parent across fork + exec):

- ``ours``: ``pipeline.datasets.top_tagging.TopTaggingFile`` read in chunks of
  ``pipeline.studies.jet_images.reference.ROWS_PER_CHUNK`` jets, each imaged and written;
- ``pandas``: ``pandas.read_hdf(path, "table")`` of the whole file, as the authors' and the
  field's loaders do, then the same imaging and writing in the same chunks.

Both write the same jet_images file (checked), so the difference is the reading. Rates are
jets per second over the whole step (open, read, image, write); ``read only`` times the
reading alone (ours: every chunk; pandas: read_hdf and the column selection).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from particle_flow import vm

from pipeline.datasets.top_tagging import MOMENTUM, TopTaggingFile
from pipeline.io.hdf5 import RaggedReader, RaggedWriter
from pipeline.run_config import resolve_config
from pipeline.studies.jet_images.formats import jet_images_schema
from pipeline.studies.jet_images.reference import ROWS_PER_CHUNK, constituent_images
from pipeline.tiny import write_top_tagging_files


def settings() -> dict:
    return resolve_config({"samples": {"t": {"process": "ttbar"}}})["jet_images"]


def write_images(path: Path, chunks, study: dict) -> None:
    """The jet_images file of (p4, label) chunks (as the convert step writes them, unshuffled)."""
    with RaggedWriter(path, jet_images_schema(study["pixels"]), {"pixels": study["pixels"]}) as writer:
        start = 0
        for p4, label in chunks:
            jets = constituent_images(p4, study)
            jets.update(label=label, event=np.arange(start, start + len(label)), shard=np.zeros(len(label), np.int32))
            writer.append({"jets": jets})
            start += len(label)


def worker(kind: str, source: Path, output: Path) -> dict:
    """One measurement in this process: {seconds, read_seconds, jets, peak_mb}."""
    study = settings()
    read_seconds = 0.0
    begin = time.perf_counter()
    if kind == "ours":
        with TopTaggingFile(source) as reader:
            n = reader.n_jets

            def chunks():
                nonlocal read_seconds
                for start in range(0, n, ROWS_PER_CHUNK):
                    t = time.perf_counter()
                    chunk = reader.read(start, start + ROWS_PER_CHUNK)
                    read_seconds += time.perf_counter() - t
                    yield chunk

            write_images(output, chunks(), study)
    else:
        import pandas as pd

        frame = pd.read_hdf(source, "table")
        p4 = np.stack([frame[[f"{q}_{i}" for i in range(200)]].to_numpy(np.float32) for q in MOMENTUM], axis=-1)
        label = frame["is_signal_new"].to_numpy().astype(np.int8)
        del frame
        read_seconds = time.perf_counter() - begin
        n = len(label)
        write_images(output, ((p4[s:s + ROWS_PER_CHUNK], label[s:s + ROWS_PER_CHUNK])
                              for s in range(0, n, ROWS_PER_CHUNK)), study)
    seconds = time.perf_counter() - begin
    return {"seconds": seconds, "read_seconds": read_seconds, "jets": int(n),
            "peak_mb": vm("VmHWM") / 1024}


def measure(kind: str, source: Path, output: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", kind, str(source), str(output)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--layout", choices=["table", "fixed"], default="table")
    parser.add_argument("--dir", type=Path, default=None, help="where the reference-layout files are kept")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, source, output = args.worker
        print(json.dumps(worker(kind, Path(source), Path(output))))
        return
    directory = args.dir or Path(tempfile.mkdtemp(prefix="top_tagging_bench_"))
    print(f"top-tagging reference layout ({args.layout}), ROWS_PER_CHUNK = {ROWS_PER_CHUNK}, files in {directory}")
    print(f"{'jets':>8} {'file MB':>8} | {'reader':>7} {'jets/s':>8} {'read only jets/s':>17} {'peak MB':>8} "
          f"| {'ours / pandas':>13}")
    for n in args.jets:
        folder = directory / f"{args.layout}_{n}"
        source = folder / "test.h5"
        if not source.exists():
            write_top_tagging_files(folder, {"test": n}, seed=n, layout=args.layout)
        results = {}
        for kind in ("ours", "pandas"):
            output = directory / f"{kind}_{n}.h5"
            results[kind] = measure(kind, source, output)
        with RaggedReader(directory / f"ours_{n}.h5", jet_images_schema()) as a, \
                RaggedReader(directory / f"pandas_{n}.h5", jet_images_schema()) as b:
            same = all(np.array_equal(a.read("jets", [f], 0, n)[f], b.read("jets", [f], 0, n)[f])
                       for f in ("image", "label", "mass"))
        for kind, r in results.items():
            ratio = (results["pandas"]["seconds"] / results["ours"]["seconds"]) if kind == "ours" else None
            print(f"{n:>8} {source.stat().st_size / 1e6:>8.0f} | {kind:>7} {r['jets'] / r['seconds']:>8.0f} "
                  f"{r['jets'] / r['read_seconds']:>17.0f} {r['peak_mb']:>8.0f} | "
                  + (f"{ratio:>12.2f}x" if ratio else f"{'':>13}"))
        print(f"{'':>8} {'':>8} | same jet_images file from both: {same}")
        for kind in results:
            (directory / f"{kind}_{n}.h5").unlink()


if __name__ == "__main__":
    main()
