"""The particle-flow study's figures (matplotlib + mplhep, PNG and PDF): the neutral
energy response per pi0 energy bin, the resolution against energy per method, and event
displays of the truth and of every method's neutral energy per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.io.outputs import pyplot, save_figure
from pipeline.studies.particle_flow.metrics import bin_name

#: The response histograms' range, as the authors' [-2, 2].
RESPONSE_RANGE = (-2.0, 2.0)
#: The event displays show the centre of the window, +- this in eta and phi [rad]: the
#: showers of 2-20 GeV pions (a hadron shower's ~95 % radius is ~0.1 at 1.5 m).
DISPLAY_HALF_WIDTH = 0.2


def plot_responses(per_event: Mapping[str, Mapping[str, np.ndarray]], bins: Sequence[tuple[float, float]],
                   stem: str | Path) -> list[Path]:
    """Histograms of (E_pred - E_true) / E_true per pi0 energy bin (one panel each), every method overlaid."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(bins), figsize=(5 * len(bins), 4.5), sharey=False)
    edges = np.linspace(*RESPONSE_RANGE, 41)
    for ax, (low, high) in zip(np.atleast_1d(axes), bins):
        for method, values in per_event.items():
            sel = (values["neutral_energy"] >= low) & (values["neutral_energy"] < high) & (values["true"] > 0)
            response = np.clip(values["predicted"][sel] / values["true"][sel] - 1, *RESPONSE_RANGE)
            ax.hist(response, edges, histtype="step", density=True, linewidth=1.5, label=method)
        ax.set_title(f"$\\pi^0$ {bin_name(low, high)}", fontsize=14)
        ax.set_xlabel(r"$(E^{pred}_{neutral} - E^{true}_{neutral}) / E^{true}_{neutral}$", fontsize=13)
    np.atleast_1d(axes)[0].set_ylabel("events (normalised)", fontsize=13)
    np.atleast_1d(axes)[0].legend(fontsize=11)
    fig.tight_layout()
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


def plot_resolution(rows: Sequence[Mapping], bins: Sequence[tuple[float, float]], stem: str | Path) -> list[Path]:
    """Resolution (IQR / median) and median response against the pi0 energy, one line per method."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    centres = [(low + high) / 2 for low, high in bins]
    names = [bin_name(low, high) for low, high in bins]
    for method in dict.fromkeys(row["method"] for row in rows):
        by_bin = {row["energy_bin"]: row for row in rows if row["method"] == method}
        top.plot(centres, [by_bin[n]["resolution_iqr"] for n in names], "o-", label=method)
        bottom.plot(centres, [by_bin[n]["response_median"] for n in names], "o-", label=method)
    top.set_ylabel("resolution (IQR / median)", fontsize=13)
    bottom.set_ylabel("median response", fontsize=13)
    bottom.axhline(0, color="grey", linewidth=0.8)
    bottom.set_xlabel(r"$E(\pi^0)$ [GeV]", fontsize=13)
    top.legend(fontsize=11)
    fig.tight_layout()
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


def plot_event_displays(displays: Mapping, event: int, geometry, stem: str | Path) -> list[Path]:
    """One event: rows charged truth, neutral truth and each method's predicted neutral
    energy [GeV], columns the layers; the extrapolated track marked in every panel."""
    plt = pyplot()
    rows = [("charged truth", displays["charged"]), ("neutral truth", displays["neutral"]),
            *((f"{m} neutral", images) for m, images in displays["predicted"].items())]
    n_layers = geometry.n_layers
    fig, axes = plt.subplots(len(rows), n_layers, figsize=(2.6 * n_layers, 2.5 * len(rows)), squeeze=False)
    half_eta, half_phi = geometry.window[0] / 2, geometry.window[1] / 2
    for r, (title, images) in enumerate(rows):
        for layer in range(n_layers):
            ax = axes[r, layer]
            image = np.clip(images[layer][event], 0, None)
            scale = max(float(np.max(displays["neutral"][layer][event] + displays["charged"][layer][event])), 1e-3)
            ax.imshow(image.T, origin="lower", extent=(-half_eta, half_eta, -half_phi, half_phi), cmap="viridis",
                      vmin=0, vmax=scale, aspect="auto")
            ax.plot(displays["track_eta"][event, layer], displays["track_phi"][event, layer], "r+", markersize=8)
            ax.set_xlim(-DISPLAY_HALF_WIDTH, DISPLAY_HALF_WIDTH)
            ax.set_ylim(-DISPLAY_HALF_WIDTH, DISPLAY_HALF_WIDTH)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(geometry.names[layer], fontsize=12)
            if layer == 0:
                ax.set_ylabel(title, fontsize=10)
    fig.suptitle(f"test event {event}: energy per cell [GeV], the track (+); the window's centre, "
                 f"+-{DISPLAY_HALF_WIDTH} in eta (x) and phi (y)",
                 fontsize=12)
    fig.tight_layout()
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths
