"""Pythia 8's side of a sample: the setting strings of its process, beam spot and seed (or
of a particle gun), the check that Pythia reads every user setting as written, and an
initialised instance; electric charges by PDG id from its particle data."""

from __future__ import annotations

import functools
import math
import re
from typing import Mapping

import numpy as np
import pythia8mc

#: Hard-process settings per process name; ``custom`` relies on pythia_settings alone.
PROCESSES: dict[str, list[str]] = {
    "ttbar": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"],
    "qcd_dijet": ["HardQCD:all = on"],
    "custom": [],
}


def pythia_settings(sample: Mapping, seed: int) -> list[str]:
    """The Pythia setting strings of a sample, seeded with ``seed``."""
    if sample["process"] == "particle_gun":
        # No beams and no hard process: Pythia only decays what simulation.gun puts into its event record.
        return ["Print:quiet = on", "Next:numberCount = 0", "Random:setSeed = on", f"Random:seed = {seed}",
                "ProcessLevel:all = off", *sample["pythia_settings"]]
    spot = sample["beam_spot"]
    settings = [
        "Print:quiet = on",
        "Next:numberCount = 0",
        f"Beams:eCM = {sample['sqrt_s']}",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        "Beams:allowVertexSpread = on",
        f"Beams:sigmaVertexX = {spot['sigma_x']}",
        f"Beams:sigmaVertexY = {spot['sigma_y']}",
        f"Beams:sigmaVertexZ = {spot['sigma_z']}",
        *PROCESSES[sample["process"]],
    ]
    if sample["pthat_min"] > 0:
        settings.append(f"PhaseSpace:pTHatMin = {sample['pthat_min']}")
    if sample["pthat_max"] >= 0:
        settings.append(f"PhaseSpace:pTHatMax = {sample['pthat_max']}")
    return settings + list(sample["pythia_settings"])


#: Words Pythia's flag parser (Settings::boolString) reads as on, and their opposites. It
#: reads every other word as off, so no other word is accepted.
_FLAG_WORDS = {"on", "true", "yes", "ok", "1", "off", "false", "no", "0"}
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
#: Pythia's kinds of settings: a flag, an integer mode, a real parm, a word, and vectors of each.
_KINDS = {"Flag": "flag", "Mode": "mode", "Parm": "parm", "Word": "word",
          "FVec": "flag vector", "MVec": "mode vector", "PVec": "parm vector", "WVec": "word vector"}
#: Particle-data properties (``id:property = value``) that take a flag, a number or particle ids.
_PARTICLE_FLAGS = {"isresonance", "maydecay", "doexternaldecay", "isvisible", "doforcewidth"}
_PARTICLE_NUMBERS = {"m0", "mwidth", "mmin", "mmax", "tau0", "rescalebr"}
_PARTICLE_IDS = {f"{mode}if{kind}" for mode in ("on", "off", "onpos", "onneg") for kind in ("any", "all", "match")}


@functools.lru_cache(maxsize=1)
def _settings_database():
    """A Pythia instance, uninitialised, for its settings database (kept: settings lives in it)."""
    return pythia8mc.Pythia("", False)


def particle_data():
    """Pythia's particle data (masses, charges, colour types by PDG id), without initialising Pythia."""
    return _settings_database().particleData


class ChargeTable:
    """Electric charges by PDG id from Pythia's ParticleData, cached per id: (n,) PDG ids
    to (n,) int8 charges [e]."""

    def __init__(self, particle_data):
        self._data = particle_data
        self._cache: dict[int, int] = {}

    def __call__(self, pdgid: np.ndarray) -> np.ndarray:
        ids, inverse = np.unique(pdgid, return_inverse=True)
        for i in ids.tolist():
            if i not in self._cache:
                self._cache[i] = int(round(self._data.charge(i)))
        return np.array([self._cache[i] for i in ids.tolist()], np.int8)[inverse]


def _value_rule(kind: str, name: str):
    """(check of one value, what Pythia expects in words) for a setting of this kind."""
    if kind in ("Flag", "FVec"):
        return (lambda value: value.lower() in _FLAG_WORDS), "on or off (Pythia reads any other word as off)"
    if kind in ("Word", "WVec"):
        return bool, "a word"
    entry = getattr(_settings_database().settings, f"get{kind}Map")(name)[name.lower()]
    pattern, parse, what = (_INTEGER, int, "an integer") if kind in ("Mode", "MVec") else (_NUMBER, float, "a number")
    low = entry.valMin if entry.hasMin else -math.inf
    high = entry.valMax if entry.hasMax else math.inf
    show = str if parse is int else "{:g}".format
    if entry.hasMin and entry.hasMax:
        what += f" in [{show(low)}, {show(high)}]"
    elif entry.hasMin or entry.hasMax:
        what += f" >= {show(low)}" if entry.hasMin else f" <= {show(high)}"
    return (lambda value: pattern.fullmatch(value) is not None and low <= parse(value) <= high), what


def _setting_problem(line: str) -> str | None:
    # As Pythia reads a line: "=" is a blank, "::" a ":", then only the first word of the value.
    name, *words = line.replace("=", " ").split() or [""]
    name = name.replace("::", ":")
    settings = _settings_database().settings
    kind = next((kind for kind in _KINDS if getattr(settings, f"is{kind}")(name)), None)
    if kind is None:
        return None  # a comment, or not a setting: make_pythia reports what Pythia rejects
    check, what = _value_rule(kind, name)
    values = words
    if kind.endswith("Vec"):
        what = f"a comma-separated list without spaces, each element {what}"
        values = words[0].strip("{}").split(",") if len(words) == 1 else words
    if len(words) != 1 or not all(map(check, values)):
        return f"{name} is a {_KINDS[kind]}: expected {what}, got {' '.join(words)!r}"
    return None


def _particle_data_problem(line: str) -> str | None:
    # As Pythia reads it: ":" and "=" are blanks, then the id, the property and its value.
    tokens = line.replace(":", " ").replace("=", " ").split()
    prop, words = (tokens[1], tokens[2:]) if len(tokens) > 1 else ("", [])
    one = words[0] if len(words) == 1 else ""
    if prop.lower() in _PARTICLE_FLAGS:
        what, ok = "on or off (Pythia reads any other word as off)", one.lower() in _FLAG_WORDS
    elif prop.lower() == "onmode":
        what, ok = "on, off or a mode 0 to 3", one.lower() in _FLAG_WORDS | {"2", "3"}
    elif prop.lower() in _PARTICLE_NUMBERS:
        what, ok = "a number", _NUMBER.fullmatch(one) is not None
    elif prop.lower() in _PARTICLE_IDS:
        what, ok = "particle ids (integers)", bool(words) and all(_INTEGER.fullmatch(word) for word in words)
    else:
        return None  # other particle data (names, decay channels): left to Pythia
    return None if ok else f"the particle property {prop} expects {what}, got {' '.join(words)!r}"


def check_pythia_settings(settings: list[str]) -> None:
    """Raise ValueError naming a setting whose value Pythia would silently misread.

    Pythia reads the first word of a value, and of it as much as parses: a flag is off for
    a word it does not know ("maybe"), a mode "2.5" is 2, a parm "1d2" is 1, "20 GeV" is
    20. So each value must be one word of its setting's kind (Pythia's settings database
    says which) and in its range; particle-data lines (``24:onMode = off``) are checked
    where the property takes a flag, a number or particle ids. Names Pythia does not know
    are left to make_pythia, which refuses them.
    """
    for line in settings:
        is_particle_data = line.lstrip()[:1].isdigit()
        problem = _particle_data_problem(line) if is_particle_data else _setting_problem(line)
        if problem:
            raise ValueError(f"{line!r}: {problem}")


def make_pythia(settings: list[str]):
    """An initialised Pythia instance; raises ValueError naming a rejected setting."""
    pythia = pythia8mc.Pythia("", False)
    for line in settings:
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise with settings {settings}")
    return pythia


def pythia_version(pythia) -> str:
    return f"{pythia.settings.parm('Pythia:versionNumber'):.3f}"
