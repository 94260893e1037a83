"""Per-jet vertex-finding metrics, exactly as the Set2Graph papers' evaluation code computes them.

For a jet with n >= 2 tracks, over its n(n-1)/2 unordered track pairs: TP = same vertex in
truth and prediction, FP = different in truth but same in prediction, FN = same in truth
but different in prediction.

* precision = TP / (TP + FP), 0 without predicted-same pairs; recall = TP / (TP + FN), 0
  without true-same pairs; F1 = 2PR / (P + R), 0 if P or R is 0 (so a jet of singletons
  scores F1 = 0 even when predicted right).
* RI: the fraction of pairs on which truth and prediction agree.
* ARI: the standard adjusted Rand index (scikit-learn's ``adjusted_rand_score``, as in the
  NeurIPS code), and the EPJC code's one-sided ARI,
  (RI - E[RI]) / (1 - E[RI]) with E[RI] = r q/C + (1 - r)(1 - q/C), r = B(n-1)/B(n)
  (Bell numbers), C = n(n-1)/2, q = number of true-same pairs.

Jets with fewer than two tracks are not scored. Everything is vectorised over all jets.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.partition import all_pairs

METRICS = ("f1", "precision", "recall", "ri", "ari", "ari_one_sided")


@lru_cache(maxsize=None)
def bell_ratios(n_max: int) -> np.ndarray:
    """r[n] = B(n-1)/B(n) for n = 0..n_max (r[0] = r[1] = 1), from exact integer Bell numbers."""
    bell = [1]
    row = [1]
    for _ in range(n_max):
        # Bell triangle: each row starts with the last entry of the previous one.
        new = [row[-1]]
        for value in row:
            new.append(new[-1] + value)
        row = new
        bell.append(row[0])
    ratios = np.ones(n_max + 1)
    for n in range(2, n_max + 1):
        ratios[n] = bell[n - 1] / bell[n]
    return ratios


def _safe_divide(numerator, denominator):
    out = np.zeros(len(numerator))
    ok = denominator > 0
    out[ok] = numerator[ok] / denominator[ok]
    return out


def pair_counts(truth: np.ndarray, prediction: np.ndarray, offsets: np.ndarray):
    """Per-jet (TP, FP, FN, TN, number of pairs) over unordered track pairs.

    truth, prediction: (n_tracks,) vertex labels within each jet; offsets: (n_jets + 1,).
    """
    i, j = all_pairs(offsets)
    n_jets = len(offsets) - 1
    jet = np.searchsorted(offsets, i, side="right") - 1
    same_true = truth[i] == truth[j]
    same_pred = prediction[i] == prediction[j]

    def per_jet(mask):
        return np.bincount(jet[mask], minlength=n_jets).astype(np.float64)

    tp = per_jet(same_true & same_pred)
    fp = per_jet(~same_true & same_pred)
    fn = per_jet(same_true & ~same_pred)
    tn = per_jet(~same_true & ~same_pred)
    return tp, fp, fn, tn, tp + fp + fn + tn


def jet_metrics(truth: np.ndarray, prediction: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-jet metrics (METRICS) and ``scored`` (n_tracks >= 2) for ragged label arrays."""
    truth = np.asarray(truth)
    prediction = np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
    n_tracks = np.diff(offsets)
    tp, fp, fn, tn, pairs = pair_counts(truth, prediction, offsets)
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    ri = _safe_divide(tp + tn, pairs)

    # Standard ARI from the pair confusion matrix (scikit-learn's formula and conventions).
    denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    ari = np.ones(len(tp))
    imperfect = (fn > 0) | (fp > 0)  # then the denominator is positive
    ari[imperfect] = 2.0 * (tp * tn - fn * fp)[imperfect] / denominator[imperfect]

    # One-sided ARI of the EPJC code: the expectation over random partitions of the tracks.
    r = bell_ratios(int(n_tracks.max(initial=2)))[n_tracks]
    q_over_c = _safe_divide(tp + fn, pairs)
    expected = r * q_over_c + (1 - r) * (1 - q_over_c)
    ari_one_sided = _safe_divide(ri - expected, 1 - expected)

    return {
        "f1": f1, "precision": precision, "recall": recall, "ri": ri,
        "ari": ari, "ari_one_sided": ari_one_sided, "scored": n_tracks >= 2,
    }
