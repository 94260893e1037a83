"""The calorimeter's layout: layers of projective (eta, phi) cells and the validated
settings (``CalorimeterGeometry.from_settings``), without the shower physics
(``pipeline.simulation.shower``) and the cells (``pipeline.simulation.calorimeter``), so that
validating a config stays cheap.

Cells: layer ``l`` has ``n_eta = 2 max_abs_eta / deta`` cells in eta, starting at
-max_abs_eta, and ``nphi`` cells in phi starting at -pi. Granularities nest (every deta
divides every larger deta, every nphi divides every larger nphi), so a coarse cell is
exactly a block of finer cells. Depths: X0 for EM layers, lambda for HAD layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from pipeline.config_schema import validate_section

#: The schema's defaults (``calorimeter`` in config.schema.yaml, the one source of them):
#: ATLAS-like, barrel, eta ~ 0.
DEFAULT_CALORIMETER: dict = validate_section("calorimeter", {})



@dataclass(frozen=True)
class CalorimeterLayer:
    """One longitudinal layer: granularity, depth, resolution and noise.

    kind: "em" (depth in X0) or "had" (depth in lambda); deta and 2 pi / nphi [rad] the
    cell size; stochastic [sqrt(GeV)] and constant (dimensionless) the sampling
    resolution sigma/E = stochastic/sqrt(E) (+) constant; noise [GeV] the Gaussian
    noise sigma per cell; n_eta the number of eta cells over [-max_abs_eta, max_abs_eta].
    """

    name: str
    kind: str
    deta: float
    nphi: int
    depth: float
    stochastic: float
    constant: float
    noise: float
    n_eta: int

    @property
    def dphi(self) -> float:
        return 2.0 * math.pi / self.nphi


@dataclass(frozen=True)
class CalorimeterGeometry:
    """Validated calorimeter settings (keys, units and limits: the schema's ``calorimeter`` section)."""

    bfield: float
    radius: float
    max_abs_eta: float
    noise_threshold: float
    x0_per_lambda: float
    mip_per_x0: float
    mip_per_lambda: float
    hadronic_response: float
    min_energy: float
    layers: tuple[CalorimeterLayer, ...]

    @classmethod
    def from_settings(cls, settings: Mapping | None = None) -> "CalorimeterGeometry":
        """The geometry of ``settings`` (a ``calorimeter`` config section; missing keys
        take the schema's defaults, every key is checked against the schema).

        Raises ValueError (a ConfigError) naming the offending key or layer and what was
        expected: a key the schema refuses, cells that do not divide 2 * max_abs_eta, no EM
        or no HAD layer, HAD layers before EM layers, duplicate names, or granularities
        that do not nest.
        """
        if settings is not None and not isinstance(settings, Mapping):
            raise ValueError(f"calorimeter: expected a mapping of settings, got {type(settings).__name__}")
        merged = validate_section("calorimeter", settings, source="calorimeter settings")
        scalars = {key: float(merged[key]) for key in (
            "bfield", "radius", "max_abs_eta", "noise_threshold", "x0_per_lambda", "mip_per_x0", "mip_per_lambda",
            "hadronic_response", "min_energy")}
        max_abs_eta = scalars["max_abs_eta"]
        layers = []
        for i, raw in enumerate(merged["layers"]):
            where = f"calorimeter.layers[{i}] ({raw['name']!r})"
            n_eta = 2.0 * max_abs_eta / raw["deta"]
            if abs(n_eta - round(n_eta)) > 1e-6 * n_eta:
                raise ValueError(f"{where}.deta: {raw['deta']!r} does not divide 2 * max_abs_eta = "
                                 f"{2 * max_abs_eta!r} into whole cells")
            layers.append(CalorimeterLayer(
                name=raw["name"], kind=raw["kind"], deta=float(raw["deta"]), nphi=int(raw["nphi"]),
                depth=float(raw["depth"]), stochastic=float(raw["stochastic"]), constant=float(raw["constant"]),
                noise=float(raw["noise"]), n_eta=int(round(n_eta)),
            ))

        names = [layer.name for layer in layers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"calorimeter.layers[{i}] ({name!r}).name: duplicate layer name")
        kinds = [layer.kind for layer in layers]
        if "em" not in kinds or "had" not in kinds:
            raise ValueError("calorimeter.layers: expected at least one 'em' and one 'had' layer, "
                             f"got kinds {kinds}")
        first_had = kinds.index("had")
        if "em" in kinds[first_had:]:
            i = first_had + kinds[first_had:].index("em")
            raise ValueError(f"calorimeter.layers[{i}] ({names[i]!r}).kind: an 'em' layer after a "
                             "'had' layer; expected all EM layers in front of the HAD layers")
        # Nesting: every pair of layers must be a whole number of cells of each other, so a
        # coarse cell is exactly a block of fine cells (and the edges line up because all
        # grids start at -max_abs_eta and -pi).
        for i, a in enumerate(layers):
            for j, b in enumerate(layers[:i]):
                fine, coarse = sorted((a.deta, b.deta))
                ratio = coarse / fine
                if abs(ratio - round(ratio)) > 1e-6 * ratio:
                    raise ValueError(
                        f"calorimeter.layers[{i}] ({a.name!r}).deta: {a.deta!r} and layer {b.name!r}'s "
                        f"{b.deta!r} do not nest; expected one to be an integer multiple of the other")
                if max(a.nphi, b.nphi) % min(a.nphi, b.nphi):
                    raise ValueError(
                        f"calorimeter.layers[{i}] ({a.name!r}).nphi: {a.nphi} and layer {b.name!r}'s "
                        f"{b.nphi} do not nest; expected one to divide the other")
        return cls(layers=tuple(layers), **scalars)

    # --- cells -----------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def layer_index(self, layer: int | str) -> int:
        """The index of a layer given by index or name."""
        if isinstance(layer, str):
            for i, item in enumerate(self.layers):
                if item.name == layer:
                    return i
            raise ValueError(f"unknown calorimeter layer {layer!r}, "
                             f"expected one of {[x.name for x in self.layers]}")
        index = int(layer)
        if not 0 <= index < self.n_layers:
            raise ValueError(f"calorimeter layer index {layer} out of range [0, {self.n_layers})")
        return index

    def shape(self, layer: int | str) -> tuple[int, int]:
        """(n_eta, n_phi) of a layer."""
        item = self.layers[self.layer_index(layer)]
        return item.n_eta, item.nphi

    def cell_index(self, layer: int | str, eta, phi) -> tuple[np.ndarray, np.ndarray]:
        """Cell indices (ieta, iphi) of points (eta, phi [rad]) in a layer, arrays of the
        input shape. phi wraps around; ieta and iphi are -1 outside |eta| < max_abs_eta
        (or for NaN)."""
        item = self.layers[self.layer_index(layer)]
        eta = np.asarray(eta, np.float64)
        phi = np.asarray(phi, np.float64)
        with np.errstate(invalid="ignore"):
            fe = np.floor((eta + self.max_abs_eta) / item.deta)
            fp = np.floor((phi + math.pi) / item.dphi) % item.nphi
            valid = (fe >= 0) & (fe < item.n_eta) & np.isfinite(fp)
        ieta = np.where(valid, fe, -1).astype(np.int64)
        iphi = np.where(valid, fp, -1).astype(np.int64)
        return ieta, iphi

    def cell_centres(self, layer: int | str, ieta, iphi) -> tuple[np.ndarray, np.ndarray]:
        """(eta, phi [rad]) of the centres of cells (ieta, iphi) of a layer."""
        item = self.layers[self.layer_index(layer)]
        eta = -self.max_abs_eta + (np.asarray(ieta, np.float64) + 0.5) * item.deta
        phi = -math.pi + (np.asarray(iphi, np.float64) + 0.5) * item.dphi
        return eta, phi

    def eta_centres(self, layer: int | str) -> np.ndarray:
        """(n_eta,) eta of the cell centres of a layer."""
        return self.cell_centres(layer, np.arange(self.shape(layer)[0]), 0)[0]

    def phi_centres(self, layer: int | str) -> np.ndarray:
        """(n_phi,) phi [rad] of the cell centres of a layer."""
        return self.cell_centres(layer, 0, np.arange(self.shape(layer)[1]))[1]

    def rebin_factors(self, fine: int | str, coarse: int | str) -> tuple[int, int]:
        """(factor_eta, factor_phi) that map cells of layer ``fine`` onto ``coarse``."""
        f, c = self.layers[self.layer_index(fine)], self.layers[self.layer_index(coarse)]
        if c.deta < f.deta * (1 - 1e-9) or c.nphi > f.nphi:
            raise ValueError(f"calorimeter layer {c.name!r} is finer than {f.name!r} in eta or phi")
        return int(round(c.deta / f.deta)), f.nphi // c.nphi

    # --- depths ------------------------------------------------------------------------------

    def depth_lambda(self) -> np.ndarray:
        """(n_layers,) depth of each layer in interaction lengths."""
        return np.array([x.depth / self.x0_per_lambda if x.kind == "em" else x.depth for x in self.layers])

    def boundaries_lambda(self) -> np.ndarray:
        """(n_layers + 1,) depth [lambda] of the layer boundaries from the front face."""
        return np.concatenate([[0.0], np.cumsum(self.depth_lambda())])

    def mip_per_layer(self) -> np.ndarray:
        """(n_layers,) energy [GeV] a minimum ionising particle deposits in each layer."""
        return np.array([x.depth * (self.mip_per_x0 if x.kind == "em" else self.mip_per_lambda)
                         for x in self.layers])
