"""The pre-training DataModule: raster and chip folders in, normalised augmented batches out."""

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from ..data import SensorGroup
from ..data.batches import SensorBatchStream, group_dataset, sample_stream
from ..data.groups import ChipGroup
from ..data.sar import SarMode
from ..data.statistics import BandStatistics, load_or_compute_statistics
from ..data.transforms import normalise, random_resized_crop

__all__ = ('PretrainDataModule',)

# Lightning warns that an IterableDataset with __len__ may repeat data across workers;
# SensorBatchStream shards itself by worker and rank, and its __len__ is per process.
warnings.filterwarnings(
    'ignore', message='Your `IterableDataset` has `__len__` defined'
)


class PretrainDataModule(L.LightningDataModule):
    """Streams batches of unlabelled patches, one sensor group per batch.

    Statistics are computed once (``prepare_data``, one process) into the run folder;
    normalisation and augmentation run on the training device, per batch.
    """

    def __init__(
        self,
        groups: Sequence[SensorGroup | ChipGroup],
        *,
        image_size: int,
        batch_size: int,
        batches_per_epoch: int,
        stats_dir: str | os.PathLike[str],
        sar_mode: SarMode = 'auto',
        crop_scale: tuple[float, float] = (0.2, 1.0),
        min_valid_fraction: float = 0.5,
        num_workers: int = 2,
        seed: int = 0,
    ) -> None:
        """Initialise the DataModule.

        Args:
            groups: sensor groups (and chip groups) to train on.
            image_size: patch side in pixels; smaller chips are enlarged.
            batch_size: patches per batch.
            batches_per_epoch: batches per epoch over all processes.
            stats_dir: folder caching the normalisation statistics.
            sar_mode: backscatter scale of SAR groups (see :mod:`dspt_geo.data.sar`).
            crop_scale: range of the random resized crop's area share.
            min_valid_fraction: patches with fewer valid pixels are skipped.
            num_workers: DataLoader workers per process.
            seed: base seed of the patch draw.

        Raises:
            IncompatibleRasterError: If *image_size* is larger than every raster of
                a group.
        """
        super().__init__()
        self.datasets = {g.name: group_dataset(g, sar_mode) for g in groups}
        self.image_size = image_size
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.stats_dir = Path(stats_dir)
        self.crop_scale = crop_scale
        self.min_valid_fraction = min_valid_fraction
        self.num_workers = num_workers
        self.seed = seed
        self.statistics: dict[str, BandStatistics] = {}
        # Built here, not in setup(), so that a patch size that fits no raster is
        # reported before the run folder is written; the stream finds its shard
        # (rank x worker) only when iterated.
        self._stream = SensorBatchStream(
            self.datasets,
            size=image_size,
            batch_size=batch_size,
            batches=batches_per_epoch,
            min_valid_fraction=min_valid_fraction,
            seed=seed,
        )

    def prepare_data(self) -> None:
        """Compute and cache the statistics of every group (runs on one process)."""
        for dataset in self.datasets.values():
            load_or_compute_statistics(dataset, self.stats_dir)

    def setup(self, stage: str) -> None:
        """Load the cached statistics."""
        self.statistics = {
            name: load_or_compute_statistics(dataset, self.stats_dir)
            for name, dataset in self.datasets.items()
        }

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Batches of this process; the epoch number reseeds the patch draw."""
        if self.trainer is not None:
            self._stream.set_epoch(self.trainer.current_epoch)
        return DataLoader(
            self._stream,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def on_after_batch_transfer(
        self, batch: dict[str, Any], dataloader_idx: int
    ) -> dict[str, Any]:
        """Normalise and augment the batch on the training device."""
        stats = self.statistics[batch['sensor']]
        images = normalise(batch['image'], batch['valid'], stats)
        if self.trainer is not None and self.trainer.training:
            images, valid = random_resized_crop(
                images, batch['valid'], scale=self.crop_scale
            )
            batch = {**batch, 'valid': valid}
        return {**batch, 'image': images}

    def preview_batches(self, count: int = 4) -> dict[str, torch.Tensor]:
        """A fixed set of normalised tiles per group, for reconstruction previews.

        Args:
            count: tiles per group.

        Returns:
            group name -> ``(count, C, H, W)`` normalised tiles.
        """
        tiles = {}
        for name, dataset in self.datasets.items():
            stream = sample_stream(
                dataset,
                size=self.image_size,
                length=count,
                min_valid_fraction=self.min_valid_fraction,
                seed=self.seed + 1_000_003,
            )
            samples = list(stream)
            images = torch.stack([sample['image'] for sample in samples])
            valid = torch.stack([sample['valid'] for sample in samples])
            tiles[name] = normalise(images, valid, self.statistics[name])
        return tiles
