"""Flavour-tagging metrics: balanced accuracy and F1, per-class accuracy and the b-tagging
discriminant (background rejection at fixed b-jet efficiency: ``pipeline.ml.roc``).

Classes are indices 0 = b, 1 = c, 2 = light (``pipeline.studies.flavour_tagging.data.CLASSES``).
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
