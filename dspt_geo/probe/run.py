"""``probe``: do an encoder's frozen features separate the classes, with few labels?

The MAE loss does not rank feature quality, so a run is judged by a probe: each
encoder (a pre-trained file, a fine-tuned model, a run's checkpoint, and the same
architecture at random initialisation as the baseline) embeds every labelled chip
once (cached, :mod:`~dspt_geo.probe.features`); then, for each share of the
training labels (stratified per class, at least one each) and each seed, a k-NN
and a logistic-regression classifier (:mod:`~dspt_geo.probe.heads`) are fitted on
that share and scored on the held-out test split. Pre-training helped where the
pre-trained encoder beats random init by more than the spread over seeds.

Segmentation labels (label rasters, mask chips, vectors over rasters) get the
per-patch-token probe of :mod:`~dspt_geo.probe.segment`, scored as mIoU.

Each encoder sees the images normalised as it was trained (the statistics in its
file or run folder); the random baseline, which has none, gets the labelled data's.
"""

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..data.labels import (
    BlockSplit,
    FolderSplit,
    LabelledData,
    RandomSplit,
    SplitSpec,
    labelled_statistics,
    open_labelled,
    stratified_fraction,
)
from ..errors import ConfigError, LabelError
from ..outputs import atomic_write
from .encoders import (
    RANDOM,
    ProbeEncoder,
    encoder_image_size,
    load_probe_encoder,
    random_encoder,
)
from .features import Features, Pool, TokenFeatures, cached_features, data_fingerprint
from .heads import HEADS, Head, knn_classify, logistic_classify
from .segment import chip_classes, patch_targets, score_tokens

__all__ = (
    'DEFAULT_FRACTIONS',
    'DEFAULT_SEEDS',
    'METRICS',
    'TEST_FRACTION',
    'ProbeTask',
    'open_probe_data',
    'probe',
    'summarise',
    'write_json',
)

logger = logging.getLogger(__name__)

#: Shares of the training labels probed by default.
DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)

#: Seeds of the label draws by default.
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)

#: Share held out for testing (and, again, for validation) by random and block splits.
TEST_FRACTION = 0.2

ProbeTask = Literal['classify', 'segment']

#: The score of each task's probe on the test split.
METRICS: dict[ProbeTask, str] = {'classify': 'accuracy', 'segment': 'miou'}


def open_probe_data(
    images: Sequence[str | os.PathLike[str]],
    labels: Sequence[str | os.PathLike[str]] | None,
    class_column: str | None,
    split: SplitSpec | Literal['auto'],
    size: int,
    seed: int = 0,
    task: ProbeTask = 'classify',
) -> LabelledData:
    """Open classification (or segmentation) labels with train, validation and test splits.

    Random and block splits hold out :data:`TEST_FRACTION` for testing and as much
    for validation. ``'auto'`` takes split folders when they hold a test split,
    else spatial blocks where the chips have a location, else a random split.

    Raises:
        LabelError: If the split yields no validation or test data.
    """
    if split == 'auto':
        for candidate in (FolderSplit(), BlockSplit(), RandomSplit()):
            try:
                data = open_probe_data(
                    images, labels, class_column, candidate, size, seed, task
                )
            except LabelError:
                if isinstance(candidate, RandomSplit):
                    raise
                continue
            return data
    if isinstance(split, BlockSplit | RandomSplit):
        split = dataclasses.replace(
            split,
            val_fraction=split.val_fraction or TEST_FRACTION,
            test_fraction=split.test_fraction or TEST_FRACTION,
            seed=seed,
        )
    data = open_labelled(
        task, list(images), list(labels or []) or None, class_column, split,
        size=size, seed=seed,
    )  # fmt: skip
    missing = [name for name in ('val', 'test') if data.split(name) is None]
    if missing:
        msg = (
            f'--split {split} leaves no {" and no ".join(missing)} data; a probe needs '
            'both (split folders train/val/test, or --split random or blocks)'
        )
        raise LabelError(msg)
    return data


def probe(
    encoders: Sequence[str | os.PathLike[str]],
    images: Sequence[str | os.PathLike[str]],
    labels: Sequence[str | os.PathLike[str]] | None = None,
    class_column: str | None = None,
    *,
    out: str | os.PathLike[str],
    split: SplitSpec | Literal['auto'] = 'auto',
    task: ProbeTask = 'classify',
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    heads: Sequence[Head] = HEADS,
    pool: Pool = 'mean',
    baseline: bool = True,
    image_size: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Probe frozen encoders on labelled chips at several label fractions.

    Args:
        encoders: encoder files (``pretrained.safetensors``, ``model.safetensors``,
            a pre-training run's ``.ckpt``) and/or ``'random'``.
        images: images as :func:`~dspt_geo.data.labels.open_labelled` takes them.
        labels: labels likewise (none for class folders).
        class_column: column of table labels holding the class.
        out: folder of the report, the plot and the feature cache.
        split: how to split train / validation / test (see :func:`open_probe_data`).
        task: ``'classify'`` (chip labels, scored as accuracy) or ``'segment'``
            (label rasters, mask chips or vectors over rasters: a probe of each
            patch token, scored as mIoU; fractions draw whole chips or windows).
        fractions: shares of the training (and validation) labels, in (0, 1].
        seeds: seeds of the label draws.
        heads: ``'knn'`` and/or ``'logistic'``.
        pool: features from the mean of the patch tokens or the class token.
        baseline: add ``'random'`` (the first encoder's architecture at random
            initialisation) unless given.
        image_size: resample chips to this size (default: the first file
            encoder's training size).
        batch_size: chips per forward pass.
        num_workers: DataLoader workers.
        seed: seed of the split and of the random initialisation.

    Returns:
        the report: ``task``, ``metric`` (``accuracy`` or ``miou``), ``results``
        (one score per encoder, head, fraction and seed), ``summary`` (mean and sd
        over seeds), ``encoders``, ``splits`` (chips per split), ``classes``,
        ``train_class_counts`` (training chips, or labelled patches, per class)
        and the settings.

    Raises:
        ConfigError: If no encoder file is given, a fraction is out of range, or
            segmentation has no labels.
        CheckpointError: If an encoder cannot be read.
        LabelError: If the labels cannot be read or split.

    .. versionadded:: 0.1
    """
    sources = [str(e) for e in encoders]
    files = [s for s in sources if s != RANDOM]
    if not files:
        msg = 'give at least one encoder file (random only copies its architecture)'
        raise ConfigError(msg)
    if baseline and RANDOM not in sources:
        sources.append(RANDOM)
    if task == 'segment' and not labels:
        msg = '--task segment needs --labels: label rasters, mask chips or vectors'
        raise ConfigError(msg)
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        msg = f'--label-fraction {bad[0]} is not in (0, 1]'
        raise ConfigError(msg)
    size = image_size or encoder_image_size(files[0])
    data = open_probe_data(images, labels, class_column, split, size, seed, task)
    datasets = {name: data.split(name) for name in ('train', 'val', 'test')}
    num_classes = data.num_classes
    fingerprint = data_fingerprint(
        [*images, *(labels or [])],
        {
            'task': task,
            'split': repr(split),
            'size': size,
            'seed': seed,
            'class_column': class_column,
        },
    )
    out = Path(out)
    data_statistics = None
    loaded: list[ProbeEncoder] = []
    for source in sources:
        if source == RANDOM:
            continue
        loaded.append(load_probe_encoder(source, data.bands))
    if RANDOM in sources:
        loaded.insert(sources.index(RANDOM), random_encoder(loaded[0].encoder, seed))
    features: dict[str, dict[str, Features | TokenFeatures]] = {}
    for entry in loaded:
        statistics = entry.statistics
        if statistics is None:
            data_statistics = data_statistics or labelled_statistics(data, seed=seed)
            statistics = data_statistics
        key = data_fingerprint(
            [],
            {
                'encoder': entry.fingerprint,
                'data': fingerprint,
                'statistics': statistics.to_dict(),
            },
        )
        logger.info('embedding the chips with %s', entry.name)
        features[entry.name] = cached_features(
            out / 'features',
            key,
            {k: v for k, v in datasets.items() if v is not None},
            entry.encoder,
            statistics,
            num_classes=num_classes if task == 'segment' else None,
            batch_size=batch_size,
            num_workers=num_workers,
        )
    metric = METRICS[task]
    results = []
    for name, split_features in features.items():
        train, val, test = (split_features[s] for s in ('train', 'val', 'test'))
        for fraction in fractions:
            for draw in seeds:
                chosen = stratified_fraction(_strata(train), fraction, draw)
                val_chosen = stratified_fraction(_strata(val), fraction, draw)
                for head in heads:
                    if isinstance(train, TokenFeatures):
                        score, extra = score_tokens(
                            head, train, val, test, chosen, val_chosen,  # type: ignore[arg-type]
                            num_classes, draw,
                        )  # fmt: skip
                    else:
                        score, extra = _score(
                            head, train, val, test, chosen, val_chosen, pool,  # type: ignore[arg-type]
                            num_classes,
                        )  # fmt: skip
                    results.append(
                        {
                            'encoder': name,
                            'head': head,
                            'fraction': fraction,
                            'seed': draw,
                            'train_labels': len(chosen),
                            metric: score,
                            **extra,
                        }
                    )
    first = next(iter(features.values()))
    report = {
        'task': task,
        'metric': metric,
        'pool': pool,
        'image_size': size,
        'encoders': [
            {'name': e.name, 'fingerprint': e.fingerprint, 'image_size': e.image_size}
            for e in loaded
        ],
        'splits': {k: len(_strata(v)) for k, v in first.items()},
        'classes': list(data.class_table.names),
        'train_class_counts': np.bincount(
            _units(first['train']), minlength=num_classes
        ).tolist(),
        'fractions': list(fractions),
        'seeds': list(seeds),
        'results': results,
    }
    report['summary'] = summarise(results, metric)
    return report


def _strata(features: Features | TokenFeatures) -> list[int]:
    """The class of each chip that label fractions stratify by."""
    if isinstance(features, TokenFeatures):
        return chip_classes(features.counts)
    return features.labels.tolist()


def _units(features: Features | TokenFeatures) -> np.ndarray:
    """Class of each labelled unit: a chip, or a patch with labelled pixels."""
    if isinstance(features, TokenFeatures):
        targets = patch_targets(features.counts).reshape(-1)
        return targets[targets >= 0]
    return features.labels


def _score(
    head: Head,
    train: Features,
    val: Features,
    test: Features,
    chosen: list[int],
    val_chosen: list[int],
    pool: Pool,
    num_classes: int,
) -> tuple[float, dict[str, Any]]:
    """Test accuracy of one head fitted on the chosen training chips."""
    x = torch.from_numpy(train.pooled(pool)[chosen])
    y = torch.from_numpy(train.labels[chosen])
    query = torch.from_numpy(test.pooled(pool))
    extra: dict[str, Any] = {}
    if head == 'knn':
        predicted = knn_classify(x, y, query, num_classes)
    else:
        predicted, decay = logistic_classify(
            x,
            y,
            torch.from_numpy(val.pooled(pool)[val_chosen]),
            torch.from_numpy(val.labels[val_chosen]),
            query,
            num_classes,
        )
        extra['weight_decay'] = decay
    accuracy = float((predicted.numpy() == test.labels).mean())
    return accuracy, extra


def summarise(
    results: Sequence[dict[str, Any]], metric: str = 'accuracy'
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of *metric* over seeds, per encoder, head and fraction."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for row in results:
        key = (row['encoder'], row['head'], row['fraction'])
        groups.setdefault(key, []).append(row[metric])
    return [
        {
            'encoder': encoder,
            'head': head,
            'fraction': fraction,
            'mean': float(np.mean(scores)),
            'sd': float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
            'n': len(scores),
        }
        for (encoder, head, fraction), scores in groups.items()
    ]


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the report atomically as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return path
