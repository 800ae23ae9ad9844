"""The fine-tuning data module: new chips every epoch, batches on the device."""

import logging
import warnings
from types import SimpleNamespace

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from dspt_geo.data.labels import open_labelled
from dspt_geo.train.finetune_data import FinetuneDataModule, segmentation_class_weights


def test_every_epoch_draws_new_scene_chips_in_workers(raster_writer):
    """Workers copy the dataset as an epoch starts; the new loader brings the epoch."""
    rng = np.random.default_rng(0)
    image = raster_writer(
        'img/a.tif', rng.integers(0, 255, (1, 64, 64), dtype=np.uint8)
    )
    labels = raster_writer('lab/a.tif', rng.integers(0, 2, (64, 64), dtype=np.uint8))
    data = open_labelled('segment', image, labels, split=None, size=16, length=4)
    module = FinetuneDataModule(data, data.statistics(), batch_size=4, num_workers=1)

    epochs = []
    for epoch in (0, 0, 1):
        module.trainer = SimpleNamespace(
            current_epoch=epoch, global_rank=0, world_size=1
        )
        epochs.append(next(iter(module.train_dataloader()))['image'])

    assert torch.equal(epochs[0], epochs[1])  # reproducible
    assert not torch.equal(epochs[0], epochs[2])


def test_class_weights_balance_imbalanced_masks(raster_writer):
    classes = np.zeros((64, 64), np.uint8)
    classes[:8] = 1  # 1/8 of the pixels
    image = raster_writer('img/a.tif', np.full((1, 64, 64), 9, np.uint8))
    labels = raster_writer('lab/a.tif', classes)
    data = open_labelled('segment', image, labels, split=None, size=64, length=1)

    median = segmentation_class_weights(data.train, 2, 255, 'median')
    inverse = segmentation_class_weights(data.train, 2, 255, 'inverse')

    # Frequencies 7/8 and 1/8: median 1/2.
    np.testing.assert_allclose(median, [(1 / 2) / (7 / 8), (1 / 2) / (1 / 8)])
    np.testing.assert_allclose(inverse, [1 / (2 * 7 / 8), 1 / (2 * 1 / 8)])
    assert segmentation_class_weights(data.train, 2, 255, 'auto') == median
    assert segmentation_class_weights(data.train, 2, 255, 'none') is None


def test_class_frequencies_count_every_chip_of_a_small_set(caplog):
    # 300 chips; class 2 only in the last one, where 64 sampled chips mostly miss it.
    chips = []
    for i in range(300):
        mask = torch.zeros(8, 8, dtype=torch.long)
        mask[:2] = 1
        if i == 299:
            mask[2:4] = 2
        mask[-1] = 255
        chips.append({'mask': mask})
    counts = torch.tensor([300 * 40 - 16, 300 * 16, 16], dtype=torch.float64)

    with caplog.at_level('INFO'):
        inverse = segmentation_class_weights(chips, 3, 255, 'inverse')

    frequency = counts / counts.sum()
    np.testing.assert_allclose(inverse, (1 / (3 * frequency)).clamp(max=50).tolist())
    assert 'in 300 chips' in caplog.text
    # Plain cross-entropy unless weights are asked for.
    assert segmentation_class_weights(chips, 3, 255) is None
    # Larger sets: a seeded sample of the given size.
    caplog.clear()
    with caplog.at_level('INFO'):
        segmentation_class_weights(chips, 3, 255, 'median', max_samples=50)
    assert 'in 50 chips' in caplog.text


def test_every_epoch_shuffles_chips_anew(tmp_path):
    from dspt_geo.data.labels import ChipClassificationDataset, ClassTable

    paths = []
    for i in range(12):
        path = tmp_path / f'{i}.tif'
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            with rasterio.open(
                path, 'w', driver='GTiff', width=4, height=4, count=1, dtype='uint8'
            ) as dst:
                dst.write(np.full((1, 4, 4), i, np.uint8))
        paths.append(str(path))
    table = ClassTable(names=('a',))
    chips = ChipClassificationDataset(paths, [0] * 12, table)
    data = SimpleNamespace(task='classify', train=chips, val=None)
    module = FinetuneDataModule(data, None, batch_size=12, num_workers=0)

    orders = []
    for epoch in (0, 0, 1):
        module.trainer = SimpleNamespace(
            current_epoch=epoch, global_rank=0, world_size=1
        )
        batch = next(iter(module.train_dataloader()))
        orders.append(batch['image'][:, 0, 0, 0].tolist())

    assert orders[0] == orders[1]
    assert orders[0] != orders[2] and sorted(orders[2]) == list(range(12))


def test_classify_batches_get_the_photometric_augmentation_after_the_turns():
    from dspt_geo.data.augment import ClassifyAugmentation
    from dspt_geo.train.finetune_data import augment_batch

    torch.manual_seed(0)
    batch = {
        'image': torch.randn(4, 13, 16, 16),
        'valid': torch.ones(4, 16, 16, dtype=torch.bool),
        'label': torch.arange(4),
    }

    def values(images):  # what flips and turns keep: each band's set of values
        return images.flatten(2).sort(dim=-1).values

    turned = augment_batch(batch, 'classify')
    jittered = augment_batch(
        batch, 'classify', ClassifyAugmentation(jitter=1.0, blur=0, erase=0)
    )

    assert torch.equal(values(turned['image']), values(batch['image']))
    assert not torch.allclose(values(jittered['image']), values(batch['image']))
    assert jittered['image'].shape == batch['image'].shape
    assert torch.equal(jittered['label'], batch['label'])


def test_classification_chips_in_memory_give_the_same_batches(tmp_path, caplog):
    from dspt_geo.data.labels import ChipClassificationDataset, ClassTable

    paths = []
    for i in range(10):
        path = tmp_path / f'{i}.tif'
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            with rasterio.open(
                path, 'w', driver='GTiff', width=6, height=6, count=2, dtype='int16'
            ) as dst:
                dst.write(np.full((2, 6, 6), i - 5, np.int16))
        paths.append(str(path))
    table = ClassTable(names=('a', 'b'))
    labels = [i % 2 for i in range(10)]

    def module(budget):
        data = SimpleNamespace(
            task='classify',
            train=ChipClassificationDataset(paths[:8], labels[:8], table),
            val=ChipClassificationDataset(paths[8:], labels[8:], table),
        )
        module = FinetuneDataModule(
            data, None, batch_size=4, num_workers=1, memory_budget=budget
        )
        module.trainer = SimpleNamespace(current_epoch=1, global_rank=0, world_size=1)
        return module

    on_file = module(0)
    with caplog.at_level(logging.INFO):
        in_memory = module(8 * 6 * 6 * (2 * 2 + 1))  # training chips only (int16, mask)

    assert not on_file.in_memory and on_file.train_dataloader().num_workers == 1
    assert in_memory.in_memory and in_memory.train_dataloader().num_workers == 0
    assert in_memory.data.val.memory is None
    assert '8 training chips' in caplog.text and 'validation chips' not in caplog.text
    for a, b in zip(
        on_file.train_dataloader(), in_memory.train_dataloader(), strict=True
    ):
        assert torch.equal(a['image'], b['image'])
        assert torch.equal(a['label'], b['label'])


def test_scene_cells_in_memory_give_the_same_batches(raster_writer, rng, caplog):
    image = raster_writer(
        'img/scene.tif', rng.integers(1, 1000, (2, 96, 96), dtype=np.uint16), nodata=0
    )
    classes = rng.choice(np.array([1, 2, 3], np.uint8), (96, 96))
    labels = raster_writer('lab/classes.tif', classes, nodata=0)

    def module(budget):
        data = open_labelled('segment', image, labels, split=None, size=16)
        module = FinetuneDataModule(
            data, None, batch_size=4, num_workers=1, memory_budget=budget
        )
        module.trainer = SimpleNamespace(current_epoch=1, global_rank=0, world_size=1)
        return module

    need = 96 * 96 * (2 * 4 + 1 + 8)  # float32 image, valid, int64 mask
    on_file = module(need - 1)
    with caplog.at_level(logging.INFO):
        in_memory = module(need)

    assert not on_file.in_memory and on_file.train_dataloader().num_workers == 1
    assert in_memory.in_memory and in_memory.train_dataloader().num_workers == 0
    assert 'scene cells read once and held in memory: 1 training cells' in caplog.text
    batches = 0
    for a, b in zip(
        on_file.train_dataloader(), in_memory.train_dataloader(), strict=True
    ):
        batches += 1
        for key in ('image', 'valid', 'mask'):
            assert torch.equal(a[key], b[key])
    assert batches > 1
