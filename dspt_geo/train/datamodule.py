"""The pre-training DataModule: raster and chip folders in, normalised augmented batches out."""

import math
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
from ..errors import ConfigError
from .interrupt import worker_ignores_stop_signals

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

    MAE's crops (issue 11): the stream reads square windows of side
    ``ceil(image_size / sqrt(crop_scale[0]))`` (501 px for 224 px and scale 0.2),
    or a file's shorter side where that is smaller; each view crops ``crop_scale``
    of its window's area and is resized to ``image_size``, so on large rasters the
    smallest crops keep the native resolution and larger ones are down-sampled (by
    up to ``1 / sqrt(crop_scale[0])``), never up-sampled (by area). The valid mask
    follows every view, for the loss (see
    :func:`~dspt_geo.data.transforms.random_resized_crop`).
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
            crop_scale: range of the random resized crop's share of the window's
                area; its lower end sets the window read (see the class).
            min_valid_fraction: patches with fewer valid pixels are skipped.
            num_workers: DataLoader workers per process.
            seed: base seed of the patch draw.

        Raises:
            IncompatibleRasterError: If *image_size* is larger than every raster of
                a group.
            ConfigError: If *crop_scale* is not a range of area shares.
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
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            msg = (
                f'crop_scale {crop_scale} must be two shares of the area, '
                '0 < low <= high <= 1 (MAE: 0.2 1.0); fix it in the --config file'
            )
            raise ConfigError(msg)
        self.window = math.ceil(image_size / math.sqrt(crop_scale[0]))
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
            window=self.window,
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
            worker_init_fn=worker_ignores_stop_signals,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def on_after_batch_transfer(
        self, batch: dict[str, Any], dataloader_idx: int
    ) -> dict[str, Any]:
        """Crop, resize, flip and turn views of the windows, then normalise them.

        Runs on the training device. Normalising the views rather than the larger
        windows costs a fraction of the arithmetic; the crop keeps nodata fills out
        of the views and marks every view pixel nodata touched as invalid.
        """
        images, valid = random_resized_crop(
            batch['image'], batch['valid'], self.image_size, scale=self.crop_scale
        )
        images = normalise(images, valid, self.statistics[batch['sensor']])
        return {**batch, 'image': images, 'valid': valid}

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
