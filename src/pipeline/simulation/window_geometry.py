"""A calorimeter window: an (eta, phi) window around a charged pion's track, layers at the
detector's granularity and every layer at one fine granularity. Configured by the
``particle_flow.calorimeter`` section: the particle-flow study's detector, and, with its
own granularity (``super_resolution.detector``), the super-resolution study's.

Conventions
-----------
* The window is ``window = (size_eta, size_phi)`` [rad] centred on the track's impact on
  the calorimeter front face; coordinates inside it are window-relative: eta and phi
  both in [-size / 2, size / 2). Axis 0 of every image is eta, axis 1 phi.
* Layer ``l`` has ``n_eta x n_phi`` detector cells; every layer is also imaged at
  ``fine x fine`` cells. A detector cell is exactly the block of
  ``(fine // n_eta) x (fine // n_phi)`` fine cells it covers (``factors``), so summing a
  fine image gives the detector image before noise.
* Depth: layers follow each other outwards from the front face (radius ``radius`` [mm]);
  an EM layer of ``depth`` X0 is ``depth * x0_length`` mm thick, a HAD layer of ``depth``
  lambda ``depth * lambda_length`` mm. ``radii`` are the layers' mid-depth radii, where
  the track is extrapolated and where each particle's shower is centred in that layer.
* The shower physics (profiles, sampling, hadronic response) is the project's
  calorimeter model (``pipeline.simulation.calorimeter``) with the window's layer depths
  and sampling terms and the ``calorimeter`` section's material constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

import numpy as np

from pipeline.simulation.calorimeter_geometry import CalorimeterGeometry, CalorimeterLayer


@dataclass(frozen=True)
class WindowLayer:
    """One layer: kind "em" (depth in X0) or "had" (depth in lambda), its detector cells
    over the window, sampling terms and noise sigma [GeV] per detector cell."""

    name: str
    kind: str
    n_eta: int
    n_phi: int
    depth: float
    stochastic: float
    constant: float
    noise: float


@dataclass(frozen=True)
class WindowGeometry:
    """The validated ``particle_flow.calorimeter`` settings with the shower material of ``calorimeter``."""

    window: tuple[float, float]
    fine: int
    layers: tuple[WindowLayer, ...]
    x0_length: float
    lambda_length: float
    energy_per_subdeposit: float
    max_subdeposits: int
    material: Mapping  # the resolved global ``calorimeter`` section

    @classmethod
    def from_config(cls, config: Mapping) -> "WindowGeometry":
        """The geometry of a resolved config; ValueError naming the key whose value does not fit."""
        section = config["particle_flow"]["calorimeter"]
        fine = int(section["fine"])
        layers = tuple(WindowLayer(**{key: raw[key] for key in WindowLayer.__dataclass_fields__})
                       for raw in section["layers"])
        names = [layer.name for layer in layers]
        for i, layer in enumerate(layers):
            where = f"particle_flow.calorimeter.layers[{i}] ({layer.name!r})"
            for key in ("n_eta", "n_phi"):
                if fine % getattr(layer, key):
                    raise ValueError(f"{where}.{key}: {getattr(layer, key)} does not divide the fine granularity "
                                     f"particle_flow.calorimeter.fine = {fine}; expected a divisor of it")
            if layer.name in names[:i]:
                raise ValueError(f"{where}.name: duplicate layer name")
        kinds = [layer.kind for layer in layers]
        if "em" not in kinds or "had" not in kinds or "em" in kinds[kinds.index("had"):]:
            raise ValueError(f"particle_flow.calorimeter.layers: expected EM layers in front of HAD layers, "
                             f"at least one of each; got kinds {kinds}")
        return cls(window=(float(section["window"][0]), float(section["window"][1])), fine=fine, layers=layers,
                   x0_length=float(section["x0_length"]), lambda_length=float(section["lambda_length"]),
                   energy_per_subdeposit=float(section["energy_per_subdeposit"]),
                   max_subdeposits=int(section["max_subdeposits"]), material=dict(config["calorimeter"]))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(n_eta, n_phi) of every layer's detector cells."""
        return [(layer.n_eta, layer.n_phi) for layer in self.layers]

    def factors(self, layer: int) -> tuple[int, int]:
        """Fine cells per detector cell of a layer in eta and in phi."""
        item = self.layers[layer]
        return self.fine // item.n_eta, self.fine // item.n_phi

    @property
    def radius(self) -> float:
        """Front face of the calorimeter [mm]."""
        return float(self.material["radius"])

    @property
    def bfield(self) -> float:
        """Solenoid field up to the front face [T]."""
        return float(self.material["bfield"])

    @cached_property
    def radii(self) -> np.ndarray:
        """(n_layers,) mid-depth radius [mm] of every layer."""
        thickness = np.array([layer.depth * (self.x0_length if layer.kind == "em" else self.lambda_length)
                              for layer in self.layers])
        return self.radius + np.cumsum(thickness) - thickness / 2

    def depth_lambda(self) -> np.ndarray:
        """(n_layers,) depth of every layer in interaction lengths."""
        return self.shower.depth_lambda()

    def cell_centres(self, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(eta (n_eta,), phi (n_phi,)) window-relative centres of a layer's detector cells
        (``layer`` None: the fine cells)."""
        n_eta, n_phi = (self.fine, self.fine) if layer is None else self.shapes[layer]
        return ((np.arange(n_eta) + 0.5) * self.window[0] / n_eta - self.window[0] / 2,
                (np.arange(n_phi) + 0.5) * self.window[1] / n_phi - self.window[1] / 2)

    def fine_index(self, d_eta: np.ndarray, d_phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fine-cell indices (ieta, iphi) of window-relative points and whether they are inside the window."""
        ieta = np.floor((np.asarray(d_eta) / self.window[0] + 0.5) * self.fine)
        iphi = np.floor((np.asarray(d_phi) / self.window[1] + 0.5) * self.fine)
        with np.errstate(invalid="ignore"):
            inside = (ieta >= 0) & (ieta < self.fine) & (iphi >= 0) & (iphi < self.fine)
        return np.where(inside, ieta, 0).astype(np.int64), np.where(inside, iphi, 0).astype(np.int64), inside

    @cached_property
    def shower(self) -> CalorimeterGeometry:
        """The project's calorimeter model with the window's layers, for the shower physics.

        Only the layers' kind, depth and sampling terms and the material constants enter
        the showers; the cells here (deta, nphi) are the window's, unused by the physics.
        """
        m = self.material
        layers = tuple(CalorimeterLayer(
            name=layer.name, kind=layer.kind, deta=self.window[0] / layer.n_eta,
            nphi=max(1, int(round(2 * np.pi / (self.window[1] / layer.n_phi)))), depth=layer.depth,
            stochastic=layer.stochastic, constant=layer.constant, noise=layer.noise,
            n_eta=layer.n_eta) for layer in self.layers)
        return CalorimeterGeometry(
            bfield=float(m["bfield"]), radius=float(m["radius"]), max_abs_eta=float(m["max_abs_eta"]),
            noise_threshold=0.0, x0_per_lambda=float(m["x0_per_lambda"]), mip_per_x0=float(m["mip_per_x0"]),
            mip_per_lambda=float(m["mip_per_lambda"]), hadronic_response=float(m["hadronic_response"]),
            min_energy=float(m["min_energy"]), layers=layers)
