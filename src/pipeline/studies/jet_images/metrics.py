"""Metrics of the jet-image study: tagger and anomaly-score performance, image quality.

Taggers and anomaly scores (higher = more signal-like, or more anomalous):

* ``auc``: the area under the ROC curve, ties counted as half (the Mann-Whitney U).
* ``accuracy``: of a classifier's probabilities at the threshold 0.5; of an anomaly
  score, which has no natural threshold, the accuracy of the best cut on the score
  ("everything is signal" and "nothing is" included). That cut is chosen on the very
  sample it is evaluated on, so it is an upper bound of what a cut fixed beforehand
  reaches, and a score without separation power gets the majority class's fraction.
* ``rejection_at_0.3``, ``rejection_at_0.5``: background rejection 1 / eps_B at signal
  efficiency 0.3 and 0.5 (``pipeline.ml.roc.rejection_at``: inf when no background passes).

Image quality against the clean images, per image (the set's value is the mean over its
images, every image having the same number of pixels):

* ``mse``: the mean squared difference per pixel, in the images' units squared.
* ``psnr``: 10 log10(peak^2 / mse) [dB], the peak being the clean image's largest
  pixel (its hottest pixel: a normalised jet image has no fixed maximum value); inf for
  a perfect image.
"""

from __future__ import annotations

import numpy as np

from pipeline.ml.roc import efficiency_curve, rejection_at

#: Signal efficiencies at which the background rejection is quoted (the landscape paper's 0.3, and 0.5).
SIGNAL_EFFICIENCIES = (0.3, 0.5)
#: The keys of ``tagger_metrics`` (the columns of the tables after the model's name).
METRIC_KEYS = ("auc", "accuracy", *(f"rejection_at_{eff}" for eff in SIGNAL_EFFICIENCIES))


def _split(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-d arrays of one length")
    signal = labels == 1
    if not (signal | (labels == 0)).all():
        raise ValueError("labels must be 1 (signal) or 0 (background)")
    return scores[signal], scores[~signal]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of scores (n,) for labels (n,) in {0, 1}; NaN without
    signal or background."""
    signal, background = _split(labels, scores)
    if not len(signal) or not len(background):
        return float("nan")
    eff_s, eff_b = efficiency_curve(signal, background)
    eff_s, eff_b = np.r_[0.0, eff_s], np.r_[0.0, eff_b]
    # Trapezoids between successive cuts: a group of tied scores is one straight segment.
    return float(np.sum(np.diff(eff_b) * (eff_s[1:] + eff_s[:-1]) / 2))


def best_cut_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """The largest accuracy of any cut ``score >= t`` (all and none passing included)."""
    signal, background = _split(labels, scores)
    eff_s, eff_b = efficiency_curve(signal, background)
    correct = np.r_[0.0, eff_s] * len(signal) + (1.0 - np.r_[0.0, eff_b]) * len(background)
    return float(correct.max() / (len(signal) + len(background)))


def tagger_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float | None = 0.5) -> dict[str, float]:
    """{auc, accuracy, rejection_at_0.3, rejection_at_0.5} of scores (n,) for labels (n,)
    in {0 background, 1 signal}. ``threshold``: accuracy of ``score >= threshold`` (0.5
    for probabilities); None: accuracy of the best cut (anomaly scores, see the module)."""
    signal, background = _split(labels, scores)
    if threshold is None:
        accuracy = best_cut_accuracy(labels, scores)
    else:
        accuracy = float(np.mean((np.asarray(scores) >= threshold) == (np.asarray(labels) == 1)))
    rejections = rejection_at(signal, background, SIGNAL_EFFICIENCIES)
    return {"auc": roc_auc(labels, scores), "accuracy": accuracy,
            **{f"rejection_at_{eff}": r for eff, r in zip(SIGNAL_EFFICIENCIES, rejections)}}


def mse(reference: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Mean squared difference per pixel (n,) of images (n, H, W) from reference (n, H, W)."""
    reference, images = np.asarray(reference, np.float64), np.asarray(images, np.float64)
    if reference.shape != images.shape:
        raise ValueError(f"images {images.shape} and reference {reference.shape} differ in shape")
    return ((images - reference) ** 2).reshape(len(images), -1).mean(axis=1)


def psnr(reference: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio (n,) [dB] of images (n, H, W) against the clean
    reference (n, H, W): 10 log10(max(reference_i)^2 / mse_i); inf where mse_i = 0."""
    error = mse(reference, images)
    peak = np.asarray(reference, np.float64).reshape(len(error), -1).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(peak**2 / error)
