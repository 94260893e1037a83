"""The super-resolution study's figures (matplotlib + mplhep, PNG and PDF): PSNR per layer
and method, the diphoton mass distributions of the pi0 sample, and event displays of the
coarse input, every method and the fine truth per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.io.outputs import pyplot, save_figure

#: The pi0 mass [GeV] (PDG), marked on the mass distributions.
PI0_MASS = 0.1349768
#: The mass histograms' range [GeV].
MASS_RANGE = (0.0, 0.4)


def plot_psnr(rows: Sequence[Mapping], layers: Sequence[str], stem: str | Path) -> list[Path]:
    """PSNR [dB] against the layer, one line per method (the metrics.csv rows)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    x = np.arange(len(layers))
    for method in dict.fromkeys(row["method"] for row in rows):
        by_layer = {row["layer"]: row["psnr"] for row in rows if row["method"] == method}
        ax.plot(x, [by_layer.get(name, np.nan) for name in layers], "o-", label=method)
    ax.set_xticks(x, layers)
    ax.set_xlabel("layer", fontsize=13)
    ax.set_ylabel("PSNR [dB] against the fine truth", fontsize=13)
    ax.legend(fontsize=11)
    fig.tight_layout()
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


def plot_masses(masses: Mapping[str, np.ndarray], stem: str | Path) -> list[Path]:
    """Normalised histograms of the diphoton mass [GeV] per row (fine truth, coarse input,
    each method), the pi0 mass marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    edges = np.linspace(*MASS_RANGE, 61)
    for name, values in masses.items():
        finite = values[np.isfinite(values)]
        if len(finite):
            ax.hist(np.clip(finite, *MASS_RANGE), edges, density=True, histtype="step", linewidth=1.6,
                    label=f"{name} ({len(finite)})", linestyle="--" if name in ("fine", "coarse") else "-")
    ax.axvline(PI0_MASS, color="grey", linewidth=0.8)
    ax.set_xlabel(r"$m_{\gamma\gamma}$ [GeV]", fontsize=13)
    ax.set_ylabel("events (normalised)", fontsize=13)
    ax.legend(fontsize=11)
    fig.tight_layout()
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


def plot_event_display(rows: Mapping[str, Sequence[np.ndarray]], layers: Sequence[str],
                       window: tuple[float, float], half_width: float, title: str, stem: str | Path) -> list[Path]:
    """One event: a row per image (coarse input, each method, fine truth), a column per
    layer; ``rows[name][layer]`` a (h, w) image [GeV per cell] on that layer's grid over the
    window. Every panel shows energy per fine-cell area (a coarse cell's energy spread over
    the fine cells it covers), one colour scale per layer: the fine truth's maximum."""
    plt = pyplot()
    names = list(rows)
    fine = rows["fine"]
    fig, axes = plt.subplots(len(names), len(layers), figsize=(2.6 * len(layers), 2.5 * len(names)), squeeze=False)
    half_eta, half_phi = window[0] / 2, window[1] / 2
    for r, name in enumerate(names):
        for layer in range(len(layers)):
            ax = axes[r, layer]
            image = np.asarray(rows[name][layer], np.float64)
            cells = (fine[layer].shape[0] // image.shape[0]) * (fine[layer].shape[1] // image.shape[1])
            scale = max(float(np.max(fine[layer])), 1e-3)
            ax.imshow(np.clip(image / cells, 0, None).T, origin="lower", cmap="viridis", vmin=0, vmax=scale,
                      extent=(-half_eta, half_eta, -half_phi, half_phi), aspect="auto", interpolation="nearest")
            ax.set_xlim(-half_width, half_width)
            ax.set_ylim(-half_width, half_width)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(layers[layer], fontsize=12)
            if layer == 0:
                ax.set_ylabel(name, fontsize=11)
    fig.suptitle(f"{title}: energy per fine cell [GeV]; the window's centre, +-{half_width} in eta (x) and phi (y)",
                 fontsize=12)
    fig.tight_layout()
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths
