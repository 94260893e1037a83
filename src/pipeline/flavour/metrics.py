"""Flavour-tagging metrics: balanced accuracy and F1, per-class accuracy, the b-tagging
discriminant and background rejection at fixed b-jet efficiency.

Classes are indices 0 = b, 1 = c, 2 = light (``pipeline.flavour.data.CLASSES``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: b-jet efficiencies at which light and c rejections are quoted (the usual working points).
WORKING_POINTS = (0.70, 0.77)


def balance_weights(labels: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Per-jet weights (n,) giving every class present the same total weight (n / the
    number of classes present); the weighted sample is flavour-balanced."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    if not counts.any():
        raise ValueError("no jets to balance")
    return len(labels) / (np.count_nonzero(counts) * counts[labels])


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 on the flavour-balanced sample, and per-class accuracy (recall).

    labels (n,) class indices; probabilities (n, 3). Keys: accuracy, f1_macro, acc_b,
    acc_c, acc_light (NaN for a class without jets, which the means then leave out).
    """
    predicted = probabilities.argmax(axis=1)
    weights = balance_weights(labels, probabilities.shape[1])
    correct = predicted == labels
    result = {"accuracy": float(np.sum(weights * correct) / np.sum(weights))}
    f1 = []
    for k, name in enumerate(("b", "c", "light")):
        true_k, pred_k = labels == k, predicted == k
        if not true_k.any():
            result[f"acc_{name}"] = float("nan")
            continue
        tp = np.sum(weights * (true_k & pred_k))
        fp = np.sum(weights * (~true_k & pred_k))
        fn = np.sum(weights * (true_k & ~pred_k))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0)
        result[f"acc_{name}"] = float(correct[true_k].mean())
    result["f1_macro"] = float(np.mean(f1))
    return result


def bootstrap_spread(labels: np.ndarray, probabilities: np.ndarray, keys: Sequence[str] = ("accuracy", "f1_macro"),
                     resamples: int = 200, seed: int = 0) -> dict[str, float]:
    """Standard deviation of metrics over bootstrap resamples of the test jets: the
    statistical uncertainty of a table entry from the test set's finite size."""
    rng = np.random.default_rng(seed)
    values = {key: [] for key in keys}
    for _ in range(resamples):
        pick = rng.integers(0, len(labels), len(labels))
        metrics = classification_metrics(labels[pick], probabilities[pick])
        for key in keys:
            values[key].append(metrics[key])
    return {key: float(np.std(v)) for key, v in values.items()}


def b_discriminant(probabilities: np.ndarray, charm_fraction: float) -> np.ndarray:
    """D_b = ln(p_b / (f_c p_c + (1 - f_c) p_light)) of probabilities (n, 3), as ATLAS's DL1."""
    p = np.clip(probabilities, 1e-12, None)
    return np.log(p[:, 0] / (charm_fraction * p[:, 1] + (1 - charm_fraction) * p[:, 2]))


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


def rejection_at(signal: np.ndarray, background: np.ndarray, efficiencies: Sequence[float] = WORKING_POINTS) -> list[float]:
    """Background rejection 1 / eps_B at each signal efficiency, interpolating the
    efficiency curve (signal, background scores: D_b of the two classes) linearly between
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
