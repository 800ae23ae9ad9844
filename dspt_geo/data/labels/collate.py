"""Batching labelled samples: one collate function for every task."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ...errors import IncompatibleRasterError

__all__ = ('collate_labelled',)

#: Keys whose per-sample tensors differ in length and are batched as lists.
_LIST_KEYS = frozenset({'boxes', 'labels', 'ignore_boxes', 'ignore_labels'})


def collate_labelled(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch labelled samples: stack same-shape tensors, list boxes and box labels.

    Args:
        samples: samples of one of this package's datasets.

    Returns:
        ``image`` (B, C, H, W), ``valid`` (B, H, W), ``label`` (B,) or ``mask``
        (B, H, W), or lists ``boxes`` and ``labels`` of B tensors.

    Raises:
        IncompatibleRasterError: If images of the batch differ in size.
    """
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        if key in _LIST_KEYS or not isinstance(values[0], Tensor):
            batch[key] = values
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            msg = (
                f'{key} tensors of one batch differ in shape {sorted(shapes)}; chips '
                'must share a size: give --image-size'
            )
            raise IncompatibleRasterError(msg)
        batch[key] = torch.stack(values)
    return batch
