"""ROC tools shared by the taggers: efficiency curves and background rejection 1 / eps_B
at fixed signal efficiency (b tagging, top tagging, anomaly scores)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def efficiency_curve(signal: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal and background efficiencies of the cuts D >= t, for every distinct score t
    from the highest down; both arrays rise from the first cut to 1."""
    scores = np.concatenate([signal, background])
    is_signal = np.concatenate([np.ones(len(signal), bool), np.zeros(len(background), bool)])
    order = np.argsort(-scores, kind="stable")
    scores, is_signal = scores[order], is_signal[order]
    last = np.r_[scores[1:] != scores[:-1], True]  # the last jet of each group of equal scores
    eff_s = np.cumsum(is_signal)[last] / max(len(signal), 1)
    eff_b = np.cumsum(~is_signal)[last] / max(len(background), 1)
    return eff_s, eff_b


def rejection_at(signal: np.ndarray, background: np.ndarray, efficiencies: Sequence[float]) -> list[float]:
    """Background rejection 1 / eps_B at each signal efficiency, interpolating the
    efficiency curve (signal, background: the discriminant's scores of the two classes,
    higher = more signal-like) linearly between
    cuts; inf when no background jet passes, NaN without signal or background jets."""
    if len(signal) == 0 or len(background) == 0:
        return [float("nan")] * len(efficiencies)
    eff_s, eff_b = efficiency_curve(signal, background)
    eff_s, eff_b = np.r_[0.0, eff_s], np.r_[0.0, eff_b]
    # Of the cuts with equal signal efficiency, the tightest has the least background.
    first = np.r_[True, np.diff(eff_s) > 0]
    eff_s, eff_b = eff_s[first], eff_b[first]
    result = []
    for target in efficiencies:
        background_eff = float(np.interp(target, eff_s, eff_b))
        result.append(1.0 / background_eff if background_eff > 0 else float("inf"))
    return result
