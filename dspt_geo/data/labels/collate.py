"""Batching labelled samples: one collate function for every task."""

from collections.abc import Mapping, Sequence
from typing import Any, overload

import torch
from torch import Tensor

from ...errors import IncompatibleRasterError

__all__ = ('SampleBatch', 'collate_labelled')

#: Keys whose per-sample tensors differ in length and are batched as lists.
_LIST_KEYS = frozenset({'boxes', 'labels', 'ignore_boxes', 'ignore_labels'})


class SampleBatch(Sequence[dict[str, Tensor]]):
    """Samples read together, held as one batch: a dataset's ``__getitems__``.

    torch's DataLoader hands a dataset's ``__getitems__(indices)`` result, a
    sequence of samples, to the collate function. A dataset that can read a whole
    batch at once (chips held in memory: one fancy-index copy) returns this: it is
    a sequence of samples (views of the batch) to anyone who iterates it, and
    :func:`collate_labelled` takes its tensors as they are instead of stacking.

    .. versionadded:: 0.1
    """

    def __init__(self, batch: Mapping[str, Tensor]) -> None:
        """Hold *batch*, tensors with the samples along their first dimension."""
        self.batch = dict(batch)
        self._length = len(next(iter(self.batch.values())))

    def __len__(self) -> int:
        """Number of samples."""
        return self._length

    @overload
    def __getitem__(self, index: int) -> dict[str, Tensor]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Tensor]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Sample *index* (views of the batch's tensors), or a list of them."""
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return {key: value[index] for key, value in self.batch.items()}


def collate_labelled(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch labelled samples: stack same-shape tensors, list boxes and box labels.

    A :class:`SampleBatch` is a batch already: its tensors are taken as they are.

    Args:
        samples: samples of one of this package's datasets.

    Returns:
        ``image`` (B, C, H, W), ``valid`` (B, H, W), ``label`` (B,) or ``mask``
        (B, H, W), or lists ``boxes`` and ``labels`` of B tensors.

    Raises:
        IncompatibleRasterError: If images of the batch differ in size.
    """
    if isinstance(samples, SampleBatch):
        return dict(samples.batch)
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
