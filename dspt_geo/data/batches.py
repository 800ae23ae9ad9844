"""Batches from several sensor groups, one group per batch, groups interleaved.

A model with one stem per sensor group needs every batch to hold one band layout.
:class:`SensorBatchStream` draws, batch after batch, a group (with probability
proportional to the square root of its pixel count, so that a small SAR archive
beside a large optical one is still seen often) and fills the batch from that
group's :class:`~dspt_geo.data.sampling.PatchStream` (or, for a group of image
chips, :class:`~dspt_geo.data.chips.ChipStream`; for a group of both,
:class:`~dspt_geo.data.mixed.MixedStream`).
"""

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .chips import ChipDataset, ChipStream
from .dataset import SensorDataset
from .groups import ChipGroup, SensorGroup
from .mixed import MixedDataset, MixedStream
from .sampling import PatchStream, process_shard
from .sar import SarMode

__all__ = ('GroupDataset', 'SensorBatchStream', 'group_dataset', 'sample_stream')


#: What reads a group: located patches, chips, or both.
GroupDataset = SensorDataset | ChipDataset | MixedDataset


def group_dataset(
    group: SensorGroup | ChipGroup, sar_mode: SarMode = 'auto'
) -> GroupDataset:
    """The dataset that reads *group*: located patches, chips, or both.

    .. versionadded:: 0.2
    """
    if isinstance(group, ChipGroup):
        return ChipDataset(group, sar_mode=sar_mode)
    if group.chips:
        return MixedDataset(group, sar_mode=sar_mode)
    return SensorDataset(group, sar_mode=sar_mode)


def sample_stream(
    dataset: GroupDataset,
    size: int,
    length: int,
    min_valid_fraction: float = 0.5,
    seed: int = 0,
    window: int | None = None,
) -> PatchStream | ChipStream | MixedStream:
    """The stream of *size* px samples that suits *dataset*.

    Args:
        dataset: a sensor group's dataset (random patches), a chip group's
            (windows of chips, small chips enlarged) or a group's of both.
        size: sample side in pixels.
        length: samples per epoch over all processes.
        min_valid_fraction: samples with fewer valid pixels are skipped.
        seed: base seed.
        window: side of the windows read where a file or chip is large enough
            (MAE's crops); None is *size*.

    Returns:
        the stream; both kinds yield ``image`` and ``valid``.
    """
    if isinstance(dataset, ChipDataset):
        return ChipStream(
            dataset, size, length, min_valid_fraction, seed, window=window
        )
    if isinstance(dataset, MixedDataset):
        return MixedStream(
            dataset, size, length, min_valid_fraction, seed, window=window
        )
    return PatchStream(dataset, size, length, min_valid_fraction, seed, window=window)


class SensorBatchStream(IterableDataset[dict[str, Any]]):
    """Batches ``{'image', 'valid', 'sensor'}`` interleaving sensor groups.

    Use with ``DataLoader(stream, batch_size=None, num_workers=N)``: batching happens
    here. Every process (DDP rank x DataLoader worker) yields its share of
    *batches* per epoch, drawn from its own seed. ``image`` and ``valid`` are
    stacked tensors when the batch's windows share one size, else lists of one
    tensor per sample (windows of files smaller than *window*).
    """

    def __init__(
        self,
        datasets: Mapping[str, GroupDataset],
        size: int,
        batch_size: int,
        batches: int,
        min_valid_fraction: float = 0.5,
        seed: int = 0,
        window: int | None = None,
    ) -> None:
        """Initialise the stream.

        Args:
            datasets: sensor group name -> dataset.
            size: patch size in pixels (the least, with *window*).
            batch_size: patches per batch.
            batches: batches per epoch over all processes.
            min_valid_fraction: patches with fewer valid pixels are skipped.
            seed: base seed.
            window: side of the windows read, capped by each file (see
                :class:`~dspt_geo.data.sampling.PatchStream`); None is *size*.
        """
        self.names = list(datasets)
        self.batch_size = batch_size
        self.batches = batches
        self.seed = seed
        self.epoch = 0
        self._iterations = 0
        self.streams = {
            name: sample_stream(
                dataset,
                size=size,
                length=batches * batch_size,
                min_valid_fraction=min_valid_fraction,
                seed=seed + i,
                window=window,
            )
            for i, (name, dataset) in enumerate(datasets.items())
        }
        pixels = np.array(
            [datasets[name].group.pixels for name in self.names], dtype=np.float64
        )
        weights = np.sqrt(pixels)
        self.weights = torch.as_tensor(weights / weights.sum())

    def set_epoch(self, epoch: int) -> None:
        """Draw new patches for *epoch*."""
        self.epoch = epoch
        for stream in self.streams.values():
            stream.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches this process yields per epoch (all its workers together)."""
        shard, shards = process_shard()
        return self.batches // shards + (1 if shard < self.batches % shards else 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this process's share of batches."""
        shard, shards = process_shard()
        quota = self.batches // shards + (1 if shard < self.batches % shards else 0)
        state = np.random.SeedSequence([self.seed, self.epoch, self._iterations, shard])
        self._iterations += 1
        generator = torch.Generator().manual_seed(int(state.generate_state(1)[0]))
        patches = {name: iter(stream) for name, stream in self.streams.items()}
        for _ in range(quota):
            name = self.names[
                int(torch.multinomial(self.weights, 1, generator=generator))
            ]
            samples = [next(patches[name]) for _ in range(self.batch_size)]
            images = [sample['image'] for sample in samples]
            valid = [sample['valid'] for sample in samples]
            if len({image.shape for image in images}) == 1:
                yield {
                    'image': torch.stack(images),
                    'valid': torch.stack(valid),
                    'sensor': name,
                }
            else:
                yield {'image': images, 'valid': valid, 'sensor': name}
