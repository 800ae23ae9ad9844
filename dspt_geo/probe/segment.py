"""The segmentation probe: a class per patch token, scored as mIoU over pixels.

Each patch token of a frozen encoder gets a target: the majority class of the
patch's labelled pixels. Patches with no labelled pixel (no label, the ignore
index, or no image data) are left out of fitting. A k-NN or logistic head (the
classification probe's, :mod:`~dspt_geo.probe.heads`) is fitted on the tokens of
the chosen training chips and classifies every test token; the score is the mean
intersection over union over the test chips' labelled pixels, each patch's class
painted over all its pixels (the token map upsampled by nearest neighbour), so it
is measured on the pixels fine-tuning is scored on.

Label fractions draw whole chips (images or scene windows), stratified by each
chip's dominant class.
"""

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from .features import TokenFeatures
from .heads import Head, knn_classify, logistic_classify

__all__ = (
    'MAX_TRAIN_TOKENS',
    'chip_classes',
    'mean_iou',
    'patch_targets',
    'score_tokens',
)

#: Training (and validation) tokens a head is fitted on at most; more are subsampled.
MAX_TRAIN_TOKENS = 50_000


def patch_targets(counts: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Majority class of each patch's labelled pixels, -1 where none is labelled.

    Args:
        counts: ``(..., K)`` labelled pixels of each class per patch.

    Returns:
        ``(...)`` class indices.
    """
    return np.where(counts.sum(axis=-1) > 0, counts.argmax(axis=-1), -1)


def chip_classes(counts: npt.NDArray[np.integer]) -> list[int]:
    """Dominant class of each chip (its most frequent labelled class), to stratify by.

    Args:
        counts: ``(N, T, K)`` per-patch class counts.

    Returns:
        N class indices (-1 for a chip without labelled pixels).
    """
    return patch_targets(counts.sum(axis=1)).tolist()


def mean_iou(
    predicted: npt.NDArray[np.integer],
    counts: npt.NDArray[np.integer],
    num_classes: int,
) -> tuple[float, list[float | None]]:
    """Pixel mIoU of per-patch predictions, each painted over its patch.

    Args:
        predicted: ``(M,)`` class of each patch.
        counts: ``(M, K)`` labelled pixels of each class under each patch.
        num_classes: K.

    Returns:
        the mean IoU over the classes present in labels or predictions, and the IoU
        of each class (None where a class is in neither).
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, predicted, counts.astype(np.int64))
    # confusion[p, t]: labelled pixels of class t under patches predicted as p.
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=1) + confusion.sum(axis=0) - intersection
    ious = [float(i / u) if u > 0 else None for i, u in zip(intersection, union)]
    present = [v for v in ious if v is not None]
    return (float(np.mean(present)) if present else 0.0), ious


def _fit_tokens(
    features: TokenFeatures, chosen: list[int], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled tokens of the chosen chips and their targets (at most MAX_TRAIN_TOKENS)."""
    tokens = features.tokens[chosen].reshape(-1, features.tokens.shape[-1])
    targets = patch_targets(features.counts[chosen]).reshape(-1)
    keep = np.flatnonzero(targets >= 0)
    if keep.size > MAX_TRAIN_TOKENS:
        keep = np.sort(
            np.random.default_rng(seed).choice(keep, MAX_TRAIN_TOKENS, replace=False)
        )
    return torch.from_numpy(tokens[keep].astype(np.float32)), torch.from_numpy(
        targets[keep]
    )


def score_tokens(
    head: Head,
    train: TokenFeatures,
    val: TokenFeatures,
    test: TokenFeatures,
    chosen: list[int],
    val_chosen: list[int],
    num_classes: int,
    seed: int,
) -> tuple[float, dict[str, Any]]:
    """Test mIoU of one head fitted on the tokens of the chosen training chips.

    Args:
        head: ``'knn'`` or ``'logistic'``.
        train: training chips' tokens and counts.
        val: validation chips' (the logistic head's penalty is chosen on them).
        test: test chips'.
        chosen: training chips to fit on.
        val_chosen: validation chips to choose on.
        num_classes: number of classes.
        seed: seed of the token subsample.

    Returns:
        the mIoU and extras for the report (``train_tokens``, per-class ``iou``,
        the logistic head's ``weight_decay``).
    """
    x, y = _fit_tokens(train, chosen, seed)
    query = torch.from_numpy(
        test.tokens.reshape(-1, test.tokens.shape[-1]).astype(np.float32)
    )
    extra: dict[str, Any] = {'train_tokens': int(y.shape[0])}
    if head == 'knn':
        predicted = knn_classify(x, y, query, num_classes)
    else:
        val_x, val_y = _fit_tokens(val, val_chosen, seed)
        predicted, decay = logistic_classify(x, y, val_x, val_y, query, num_classes)
        extra['weight_decay'] = decay
    miou, ious = mean_iou(
        predicted.numpy(), test.counts.reshape(-1, num_classes), num_classes
    )
    extra['iou'] = ious
    return miou, extra
