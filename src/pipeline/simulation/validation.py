"""A page of validation plots per sample: is the simulation sane at a glance?

Per jet flavour: track multiplicity, lifetime-signed d0 significance, jet pT; and the
transverse decay length of the b (and c) hadrons; plus a Markdown summary table. Histograms are filled chunk by chunk
with fixed binning, so memory stays flat however many shards are plotted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import mplhep
import numpy as np

from pipeline.io.hdf5 import RaggedReader, parent_index
from pipeline.io.outputs import pyplot, save_figure, write_text
from pipeline.simulation.formats import TRACK_JETS
from pipeline.simulation.kinematics import wrap_phi

FLAVOURS = {5: "b jets", 4: "c jets", 0: "light jets"}
HADRONS = {5: "b hadrons", 4: "c hadrons"}
PLOTS = ("track_multiplicity", "d0_significance", "hadron_decay_length", "jet_pt")
JETS_PER_CHUNK = 50_000

BINS = {
    "track_multiplicity": np.arange(-0.5, 30.5, 1.0),
    "d0_significance": np.linspace(-20, 40, 121),
    "hadron_decay_length": np.linspace(0, 20, 81),
    "jet_pt": np.linspace(20, 300, 57),
}


def signed_d0_significance(d0, sigma_d0, track_phi, jet_phi):
    """d0/sigma(d0) signed positive when the track crosses the jet axis in front of the
    primary vertex (as a decay in flight along the jet does)."""
    sign = np.where(np.sin(wrap_phi(jet_phi - track_phi)) * d0 >= 0, 1.0, -1.0)
    return sign * np.abs(d0) / sigma_d0


def fill_histograms(paths: Sequence[str | Path]) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, dict[int, float]]]:
    """Histogram contents {plot: {flavour: counts}} over all given track_jets files, and
    the sums behind the summary table {quantity: {flavour: sum}}."""
    hists = {name: {f: np.zeros(len(BINS[name]) - 1) for f in (FLAVOURS if name != "hadron_decay_length" else HADRONS)}
             for name in PLOTS}
    sums = {key: dict.fromkeys(FLAVOURS, 0.0) for key in ("jets", "tracks", "vertices", "hadrons", "lxy")}
    for path in paths:
        with RaggedReader(path, TRACK_JETS) as reader:
            n_jets = reader.n_rows("jets")
            for start in range(0, n_jets, JETS_PER_CHUNK):
                stop = min(start + JETS_PER_CHUNK, n_jets)
                jets = reader.read("jets", ["pt", "phi", "flavour"], start, stop)
                tracks, offsets = reader.read_children("tracks", start, stop, ["d0", "sigma_d0", "phi"])
                vertex_counts = np.diff(reader.offsets("vertices", start, stop))
                hadrons, _ = reader.read_children(
                    "hadrons", start, stop, ["flavour", "prod_x", "prod_y", "decay_x", "decay_y"])
                jet_of = parent_index(offsets)
                significance = signed_d0_significance(
                    tracks["d0"], tracks["sigma_d0"], tracks["phi"], jets["phi"][jet_of])
                lxy = np.hypot(hadrons["decay_x"] - hadrons["prod_x"], hadrons["decay_y"] - hadrons["prod_y"])
                for f in FLAVOURS:
                    is_f = jets["flavour"] == f
                    hists["track_multiplicity"][f] += np.histogram(
                        np.minimum(np.diff(offsets)[is_f], 29), BINS["track_multiplicity"])[0]
                    sums["jets"][f] += is_f.sum()
                    sums["tracks"][f] += np.diff(offsets)[is_f].sum()
                    sums["vertices"][f] += vertex_counts[is_f].sum()
                    hists["jet_pt"][f] += np.histogram(jets["pt"][is_f], BINS["jet_pt"])[0]
                    hists["d0_significance"][f] += np.histogram(
                        np.clip(significance[is_f[jet_of]], -19.99, 39.99), BINS["d0_significance"])[0]
                for f in HADRONS:
                    is_f = hadrons["flavour"] == f
                    hists["hadron_decay_length"][f] += np.histogram(
                        np.clip(lxy[is_f], 0, 19.99), BINS["hadron_decay_length"])[0]
                    sums["hadrons"][f] += is_f.sum()
                    sums["lxy"][f] += lxy[is_f].sum()
    return hists, sums


def summary_table(sums: dict[str, dict[int, float]], title: str = "") -> str:
    """A Markdown table of per-flavour jet counts, multiplicities and hadron decay lengths."""
    total = sum(sums["jets"].values())
    lines = [f"# Validation summary{': ' + title if title else ''}", "",
             "| flavour | jets | fraction | tracks / jet | true vertices / jet | matched hadrons | mean hadron L_xy [mm] |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for f, label in FLAVOURS.items():
        n = sums["jets"][f]
        n_had = sums["hadrons"].get(f, 0.0)
        lxy = f"{sums['lxy'][f] / n_had:.2f}" if f in HADRONS and n_had else "-"
        had = f"{int(n_had)}" if f in HADRONS else "-"
        tracks, vertices = (f"{sums[key][f] / n:.2f}" if n else "-" for key in ("tracks", "vertices"))
        lines.append(f"| {label} | {int(n)} | {n / total if total else 0:.3f} | {tracks} | "
                     f"{vertices} | {had} | {lxy} |")
    lines.append("")
    lines.append("Matched hadrons: weakly decaying b (in the b row) and c (in the c row) hadrons matched to any jet.")
    return "\n".join(lines) + "\n"


_LABELS = {
    "track_multiplicity": ("Number of tracks per jet (overflow in last bin)", False),
    "d0_significance": (r"Signed $d_0 / \sigma(d_0)$ (overflow in last bins)", True),
    "hadron_decay_length": (r"Hadron transverse decay length $L_{xy}$ [mm]", True),
    "jet_pt": (r"Jet $p_\mathrm{T}$ [GeV]", True),
}


def plot_validation(paths: Sequence[str | Path], output_dir: str | Path, title: str = "") -> list[Path]:
    """Draw the validation plots as PNG and PDF into output_dir; returns the files written."""
    plt = pyplot()
    hists, sums = fill_histograms(paths)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PLOTS:
        xlabel, logy = _LABELS[name]
        names = HADRONS if name == "hadron_decay_length" else FLAVOURS
        fig, ax = plt.subplots(figsize=(8, 6))
        for f, label in names.items():
            counts = hists[name][f]
            total = counts.sum()
            if total == 0:
                continue
            mplhep.histplot(counts / total, BINS[name], ax=ax, label=f"{label} ({int(total)})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Fraction")
        if logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=14, loc="left")
        ax.legend(fontsize=13)
        written += save_figure(fig, output_dir / name, bbox_inches="tight")
        plt.close(fig)
    written.append(write_text(output_dir / "summary.md", summary_table(sums, title)))
    return written
