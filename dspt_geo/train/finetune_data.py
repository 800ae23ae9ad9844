"""The fine-tuning DataModule: labelled data in, normalised augmented batches out.

Training batches come from :class:`~dspt_geo.data.labels.LabelledData`'s training
split: chips (map-style, shuffled and dealt out to DDP ranks here) or random scene
chips (iterable, sharding themselves). Validation and evaluation read every
validation chip, or overlapping windows over the validation scenes that score
every labelled pixel once (:class:`~dspt_geo.data.labels.SceneWindows`).
Normalisation and augmentation run on the training device, per batch.
"""

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
)

from .. import SUMMARY_LOGGER
from ..data.augment import ClassifyAugmentation
from ..data.labels import (
    ChipClassificationDataset,
    ChipDetectionDataset,
    ChipSegmentationDataset,
    LabelledData,
    SceneDataset,
    SceneWindows,
    collate_labelled,
)
from ..data.statistics import BandStatistics
from ..data.transforms import (
    band_jitter,
    flip_rotate,
    normalise,
    scale_crop,
    scale_jitter,
)
from .interrupt import worker_ignores_stop_signals

__all__ = (
    'FinetuneDataModule',
    'evaluation_dataset',
    'evaluation_loader',
    'most_objects_per_tile',
    'segmentation_class_weights',
)

logger = logging.getLogger(__name__)
summary = logging.getLogger(SUMMARY_LOGGER)

# Lightning warns that an IterableDataset with __len__ may repeat data across workers;
# the scene datasets shard themselves by worker and rank, their __len__ is per process.
warnings.filterwarnings(
    'ignore', message='Your `IterableDataset` has `__len__` defined'
)

#: Imbalance (most / least frequent class) above which ``auto`` weights classes.
_AUTO_IMBALANCE = 3.0

#: Largest class weight: a class seen in a few pixels must not dominate the loss.
_MAX_WEIGHT = 50.0

#: Training chips whose masks give the class frequencies: all of a smaller set
#: (issue 13: 64 chips could miss whole classes and weight them 50x).
_FREQUENCY_SAMPLES = 1000

#: Validation batches per training batch: no gradients or optimiser state are kept,
#: so larger batches fit and keep validation short (issue 15); detection less, as
#: its RoI features for every proposal grow with the batch.
_EVAL_BATCH_FACTOR = {'classify': 4, 'segment': 4, 'detect': 2}


def evaluation_dataset(
    dataset: Dataset[dict[str, Tensor]], overlap: int = 0, size: int | None = None
) -> Dataset[dict[str, Tensor]]:
    """What to score of a split: its chips, or overlapping windows over its scenes.

    Args:
        dataset: a split of :class:`~dspt_geo.data.labels.LabelledData`.
        overlap: pixels shared by neighbouring scene windows.
        size: side of the scene windows (default: the dataset's chip size).

    Returns:
        :class:`SceneWindows` over the scenes' area, chip windows that score each
        pixel once (segmentation and detection chips), or the chips as they are.
    """
    if isinstance(dataset, SceneDataset):
        size = size or dataset.size
        return SceneWindows(dataset, overlap=min(overlap, size - 1), size=size)
    if isinstance(dataset, ChipSegmentationDataset | ChipDetectionDataset):
        return dataset.scored()
    return dataset


class _Shard(Sampler[int]):
    """Every *world*-th index from *rank*: each sample scored once over all ranks."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = range(rank, length, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def evaluation_loader(
    dataset: Dataset[dict[str, Tensor]],
    batch_size: int,
    num_workers: int = 0,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader[dict[str, Any]]:
    """Batches of every sample of *dataset*, in order, this process's share.

    Args:
        dataset: from :func:`evaluation_dataset`.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        rank: this process's rank (map-style datasets; iterable ones shard
            themselves).
        world_size: number of processes.

    Returns:
        the loader, batching with :func:`~dspt_geo.data.labels.collate_labelled`.
    """
    sampler = (
        None
        if isinstance(dataset, IterableDataset)
        else _Shard(len(dataset), rank, world_size)  # type: ignore[arg-type]
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=worker_ignores_stop_signals,
        collate_fn=collate_labelled,
        pin_memory=torch.cuda.is_available(),
    )


def segmentation_class_weights(
    dataset: Dataset[dict[str, Tensor]],
    num_classes: int,
    ignore_index: int,
    method: Literal['auto', 'median', 'inverse', 'none'] = 'none',
    max_samples: int = _FREQUENCY_SAMPLES,
    seed: int = 0,
    class_names: Sequence[str] = (),
) -> list[float] | None:
    """Class weights of the segmentation loss from the label frequencies.

    The frequencies are counted on every training chip of a set of up to
    *max_samples* chips, else on a seeded *max_samples* of them (scenes: the
    first *max_samples* random chips).
    ``median``: median frequency balancing (Eigen and Fergus, ICCV 2015),
    ``median(f) / f_c``; ``inverse``: ``1 / (K f_c)`` over the K classes present;
    ``auto``: median frequency balancing when the most frequent class is over
    three times as frequent as the least, else none. Weights are capped at 50;
    classes not seen get the largest weight.

    Args:
        dataset: the training split.
        num_classes: number of classes.
        ignore_index: mask value of unlabelled pixels.
        method: ``'auto'``, ``'median'``, ``'inverse'`` or ``'none'``.
        max_samples: chips to count.
        seed: seed of the chips drawn from map-style datasets.
        class_names: names of the classes, for the log line saying the choice.

    Returns:
        one weight per class, or None for an unweighted loss.
    """
    if method == 'none':
        summary.info('class weights: none (--class-weights none)')
        return None
    counts = torch.zeros(num_classes, dtype=torch.float64)
    chips = 0
    for sample in _some_samples(dataset, max_samples, seed):
        chips += 1
        mask = sample['mask']
        labelled = mask[mask != ignore_index]
        counts += torch.bincount(labelled.flatten(), minlength=num_classes)[
            :num_classes
        ].double()
    present = counts > 0
    if not present.any():
        summary.info('class weights: none (no labelled pixel in the chips counted)')
        return None
    frequency = counts / counts.sum()
    seen = frequency[present]
    if method == 'auto':
        imbalance = float(seen.max() / seen.min())
        if imbalance <= _AUTO_IMBALANCE:
            summary.info(
                'class weights: none (--class-weights auto: the classes are within '
                '%.1fx of each other, from %d labelled pixels in %d chips)',
                imbalance,
                int(counts.sum()),
                chips,
            )
            return None
        method = 'median'
    weights = torch.zeros(num_classes, dtype=torch.float64)
    if method == 'median':
        weights[present] = seen.quantile(0.5) / seen  # the mean of two middles
    else:
        weights[present] = 1 / (len(seen) * seen)
    weights = weights.clamp(max=_MAX_WEIGHT)
    weights[~present] = weights[present].max()
    summary.info(
        'class weights (%s frequency, from %d labelled pixels in %d chips): %s',
        method,
        int(counts.sum()),
        chips,
        ', '.join(
            f'{name} {w:.3g}'
            for name, w in zip(
                class_names or map(str, range(num_classes)),
                weights.tolist(),
                strict=True,
            )
        ),
    )
    return [float(w) for w in weights]


def most_objects_per_tile(
    dataset: Dataset[dict[str, Tensor]], max_samples: int = 64, seed: int = 0
) -> int:
    """The most boxes in one training tile, over up to *max_samples* tiles.

    Sizes the detector's sampling (:func:`~dspt_geo.models.head_sizes.detection_sampling`).

    Args:
        dataset: the training split of a detection task.
        max_samples: tiles to count.
        seed: seed of the tiles drawn from map-style datasets.

    Returns:
        the most boxes seen in a tile (0 when no tile holds one).
    """
    return max(
        (len(sample['boxes']) for sample in _some_samples(dataset, max_samples, seed)),
        default=0,
    )


def _some_samples(
    dataset: Dataset[dict[str, Tensor]], count: int, seed: int
) -> Iterable[dict[str, Tensor]]:
    """Up to *count* samples: the first drawn (iterable) or a seeded choice."""
    if isinstance(dataset, IterableDataset):
        for index, sample in enumerate(dataset):
            if index >= count:
                return
            yield sample
        return
    length = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed))
    for index in order[:count].tolist():
        yield dataset[index]


class FinetuneDataModule(L.LightningDataModule):
    """Batches of labelled data for a fine-tuning run.

    Augmentation on the device, per batch, in training only (:func:`augment_batch`):
    random flips and 90-degree rotations for every task (masks and boxes alike),
    plus scale jitter and random crops for detection and segmentation, per-band
    photometric distortion for segmentation, and band-safe photometric jitter, blur
    and random erasing for classification
    (:class:`~dspt_geo.data.augment.ClassifyAugmentation`).
    """

    def __init__(
        self,
        data: LabelledData,
        statistics: BandStatistics,
        *,
        batch_size: int,
        num_workers: int = 2,
        overlap: int = 0,
        seed: int = 0,
        augment: bool = True,
        band_jitter: bool = True,
        random_erase: float = 0.25,
        memory_budget: int = 0,
    ) -> None:
        """Initialise the DataModule.

        Args:
            data: the opened labelled data.
            statistics: per-band statistics to normalise with.
            batch_size: chips per batch and process.
            num_workers: DataLoader workers per process.
            overlap: pixels shared by neighbouring validation windows over scenes.
            seed: seed of the chip order.
            augment: augment training batches.
            band_jitter: classify: per-band gain and offset, and blur.
            random_erase: classify: probability of erasing a rectangle.
            memory_budget: bytes the training and validation chips or scene
                cells may take in memory (:func:`hold_in_memory`); 0: read every
                sample from its file.

        .. versionchanged:: 0.1
           Added *band_jitter* and *random_erase* (issue 13), *memory_budget*
           (issue 15).

        .. versionchanged:: 0.2
           *memory_budget* holds scene cells too (issue 15).
        """
        super().__init__()
        self.data = data
        self.statistics = statistics
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.classify_augmentation = (
            ClassifyAugmentation(
                jitter=0.8 if band_jitter else 0.0,
                blur=0.2 if band_jitter else 0.0,
                erase=random_erase,
            )
            if data.task == 'classify'
            else None
        )
        #: Whether the training samples come from memory (then loaded in this
        #: process: a worker would only take CPU time from the step).
        self.in_memory = hold_in_memory(data, memory_budget)
        self.val = (
            evaluation_dataset(data.val, overlap) if data.val is not None else None
        )

    @property
    def task(self) -> str:
        """``'classify'``, ``'segment'`` or ``'detect'``."""
        return self.data.task

    def _world(self) -> tuple[int, int]:
        """(rank, world size) of this process."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Shuffled chips (dealt out to ranks) or this process's random scene chips."""
        dataset = self.data.train
        sampler: Sampler[int] | None = None
        if isinstance(dataset, IterableDataset):
            if self.trainer is not None and isinstance(dataset, SceneDataset):
                dataset.set_epoch(self.trainer.current_epoch)
        else:
            rank, world = self._world()
            # A new loader every epoch (see build_trainer): the epoch seeds the order.
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            state = np.random.SeedSequence([self.seed, epoch]).generate_state(1)
            sampler = (
                DistributedSampler(
                    dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
                )  # Lightning calls its set_epoch
                if world > 1
                else RandomSampler(
                    dataset,  # type: ignore[arg-type]
                    generator=torch.Generator().manual_seed(int(state[0])),
                )
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=0 if self.in_memory else self.num_workers,
            worker_init_fn=worker_ignores_stop_signals,
            collate_fn=collate_labelled,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )

    def val_dataloader(self) -> DataLoader[dict[str, Any]] | list[Any]:
        """Every validation chip or window once, over all processes (none: no split).

        Batches are 4 times the training batch (detection: twice).
        """
        if self.val is None:
            return []
        rank, world = self._world()
        return evaluation_loader(
            self.val,
            self.batch_size * _EVAL_BATCH_FACTOR[self.task],
            self.num_workers,
            rank=rank,
            world_size=world,
        )

    def on_after_batch_transfer(
        self, batch: dict[str, Any], dataloader_idx: int
    ) -> dict[str, Any]:
        """Normalise the batch on the device; augment it when training."""
        images = normalise(batch['image'], batch['valid'], self.statistics)
        batch = {**batch, 'image': images}
        if self.augment and self.trainer is not None and self.trainer.training:
            batch = augment_batch(
                batch,
                self.task,
                self.classify_augmentation,
                ignore_index=self.data.class_table.ignore_index,
            )
        return batch


#: What :func:`hold_in_memory` holds per task kind, and how the log names it.
_HELD = {
    'chips': (ChipClassificationDataset, 'classification chips decoded once'),
    'cells': (SceneDataset, 'scene cells read once'),
}


def hold_in_memory(data: LabelledData, budget: int) -> bool:
    """Hold the training, then the validation data in memory when they fit *budget*.

    Classification chips are decoded once into one array (few-label chip sets are
    small and run many epochs: EuroSAT RGB, 4,000 chips of 64 px, 49 MB); scene
    cells are read once (:meth:`~dspt_geo.data.labels.SceneDataset.hold_in_memory`;
    on a small scene an epoch is a few steps, and every chip was a file read, a
    rasterisation or a spatial query in a worker started anew each epoch, issue
    15). A sample is then an index and a copy, or an array slice, and the training
    loader runs in the main process without taking CPU time from the step. The
    validation data is held if the rest of the budget holds it. Where the training
    scene is not held, the log says why.

    Args:
        data: the opened labelled data.
        budget: bytes the data may take (0: none is held).

    Returns:
        whether the training data is held in memory.
    """
    if budget <= 0:
        return False
    unit = 'chips' if data.task == 'classify' else 'cells'
    kind, what = _HELD[unit]
    held, needs = [], {}
    for name, dataset in (('training', data.train), ('validation', data.val)):
        if not isinstance(dataset, kind):
            continue
        need = needs[name] = dataset.memory_bytes()
        if need is None or not dataset.hold_in_memory(budget):
            continue
        budget -= need
        count = len(dataset) if unit == 'chips' else len(dataset.memory.cells)  # type: ignore[union-attr]
        held.append(f'{count} {name} {unit} ({need / 2**20:.0f} MB)')
    if held:
        logger.info(
            '%s and held in memory: %s (--chip-memory, the training loader runs '
            'without workers)',
            what,
            ', '.join(held),
        )
    train = data.train
    if not isinstance(train, kind):
        return False
    if train.memory is None and unit == 'cells':
        need = needs['training']
        logger.info(
            'training scene chips are read from the files: %s',
            'a file of the training area needs resampling or a warp'
            if need is None
            else f'its cells need {need / 2**20:.0f} MB, more than --chip-memory',
        )
    return train.memory is not None


def augment_batch(
    batch: dict[str, Any],
    task: str,
    classify_augmentation: ClassifyAugmentation | None = None,
    *,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Flips and 90-degree rotations; scale jitter and crops first for detection.

    Segmentation follows the UperNet recipe of BEiT and MAE: scale jitter 0.5-2.0
    with a random crop (:func:`~dspt_geo.data.transforms.scale_jitter`), flips and
    rotations, then band-safe photometric distortion
    (:func:`~dspt_geo.data.transforms.band_jitter`).

    Args:
        batch: a normalised batch of :func:`collate_labelled`.
        task: ``'classify'``, ``'segment'`` or ``'detect'``.
        classify_augmentation: classify: applied after the flips and rotations.
        ignore_index: segment: mask value of unlabelled pixels (also of the
            canvas around a shrunk sample).

    Returns:
        the augmented batch (a new dict).
    """
    images, valid = batch['image'], batch['valid']
    match task:
        case 'classify':
            images, valid, _, _ = flip_rotate(images, valid)
            if classify_augmentation is not None:
                images = classify_augmentation(images, valid)
            return {**batch, 'image': images, 'valid': valid}
        case 'segment':
            images, valid, masks = scale_jitter(
                images, valid, batch['mask'], ignore_index
            )
            images, valid, turned, _ = flip_rotate(images, valid, masks=masks)
            images = band_jitter(images, valid)
            return {**batch, 'image': images, 'valid': valid, 'mask': turned}
        case _:
            images, valid, boxes, labels = scale_crop(
                images, valid, batch['boxes'], batch['labels']
            )
            images, valid, _, moved = flip_rotate(images, valid, boxes=boxes)
            return {
                **batch,
                'image': images,
                'valid': valid,
                'boxes': moved,
                'labels': labels,
            }
