from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from dspt_geo.errors import IncompatibleRasterError
from dspt_geo.predict import PredictionSpec, SceneReader, predict_scene, select_bands
from dspt_geo.predict import scene as scene_module
from dspt_geo.predict.scene import READ_AHEAD_ROWS, iter_batches
from dspt_geo.predict.tiling import TileGrid

from .conftest import ConvNet, ValueClassifier


@pytest.mark.parametrize(
    ('descriptions', 'bands', 'expected'),
    [
        (['nir', 'red', 'green', 'blue'], ['red', 'green', 'blue'], [2, 3, 4]),
        (['B04', 'B03', 'B02'], ['b02', 'b03', 'b04'], [3, 2, 1]),
        ([None, None, None], ['red', 'green', 'blue'], [1, 2, 3]),
        (['VV', 'VH'], ['band_1', 'band_2'], [1, 2]),
    ],
)
def test_select_bands(
    descriptions: list[str | None], bands: list[str], expected: list[int]
) -> None:
    assert select_bands(descriptions, bands) == expected


def test_reader_masks_nodata_like_training(
    raster_writer: Callable[..., Path], make_spec: Callable[..., PredictionSpec]
) -> None:
    data = np.full((3, 10, 10), 9, dtype=np.uint8)
    data[:, 0, 0] = 0  # nodata in all bands: invalid
    data[0, 0, 1] = 0  # nodata in one band only: valid (as SensorDataset.valid_mask)
    path = raster_writer('s.tif', data)  # no nodata declared: training's (0) applies
    with SceneReader(path, make_spec()) as reader:
        (tile,) = TileGrid(10, 10, 16, 4)
        image, valid = reader.read(tile, 16)
    assert image.shape == (3, 16, 16) and image.dtype == np.float32
    assert not valid[0, 0] and valid[0, 1] and valid[:10, :10].sum() == 99
    assert not valid[10:].any() and not valid[:, 10:].any(), 'padding is invalid'


@pytest.mark.parametrize(
    ('dtype', 'nodata', 'crs'),
    [('uint16', 0, 'EPSG:32633'), ('float32', -9999.0, 'EPSG:4326')],
)
def test_windows_read_by_rows_equal_their_own_reads(
    raster_writer: Callable[..., Path],
    make_spec: Callable[..., PredictionSpec],
    rng: np.random.Generator,
    dtype: str,
    nodata: float,
    crs: str,
) -> None:
    # Windows are sliced from one read of their row of windows (issue 16); in any
    # order, each must equal a read of the window itself.
    data = rng.integers(0, 50, (3, 45, 37)).astype(dtype)
    data[:, 5:9, 3:30] = nodata  # a band of nodata in all bands
    if dtype == 'float32':
        data[1, 20, 20] = np.nan
    path = raster_writer('s.tif', data, nodata=nodata, crs=crs, res=0.001)
    tiles = list(TileGrid(45, 37, 16, 4))
    order = [*tiles[::2], *tiles[1::2]]  # rows interleaved: the cache must follow
    invalid = 0
    with SceneReader(path, make_spec()) as reader, rasterio.open(path) as src:
        assert not reader.warped
        for tile in order:
            image, valid = reader.read(tile, 16)
            window = src.read(
                window=((tile.row, tile.row + 16), (tile.col, tile.col + 16))
            )
            expected = np.isfinite(window).all(axis=0) & (window != nodata).any(axis=0)
            np.testing.assert_array_equal(image, window.astype(np.float32))
            np.testing.assert_array_equal(valid, expected)
            invalid += int((~valid).sum())
    assert invalid >= 4 * 27, 'the nodata band is masked'


def test_rows_are_read_to_the_end_of_a_row_of_the_file_blocks(
    raster_writer: Callable[..., Path],
    make_spec: Callable[..., PredictionSpec],
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GDAL decodes every compressed block of a full-width read (issue 16): rows of
    # windows are served from one read that ends at a row of blocks (here with
    # no minimum of rows: the scene is smaller than READ_AHEAD_ROWS).
    monkeypatch.setattr(scene_module, 'READ_AHEAD_ROWS', 0)
    data = rng.integers(1, 50, (3, 100, 70)).astype('uint8')
    path = raster_writer(
        't.tif', data, tiled=True, blockxsize=16, blockysize=32, compress='zstd'
    )
    tiles = list(TileGrid(100, 70, 16, 4))  # rows of windows at 0, 12, ..., 84
    with SceneReader(path, make_spec()) as reader:
        assert reader.block_height == 32
        reads: list[tuple[int, int]] = []
        read = reader._read

        def counted(window: Window) -> Any:
            reads.append((window.row_off, window.row_off + window.height))
            return read(window)

        reader._read = counted  # type: ignore[method-assign]
        for tile in tiles:
            image, valid = reader.read(tile, 16)
            rows, cols = slice(tile.row, tile.row + 16), slice(tile.col, tile.col + 16)
            np.testing.assert_array_equal(image, data[:, rows, cols].astype(np.float32))
            assert valid.all()
    assert reads == [(0, 32), (24, 64), (60, 96), (84, 100)]


@pytest.mark.parametrize(
    ('dtype', 'nodata', 'crs', 'size'),
    [
        ('uint16', 0, 'EPSG:32633', 16),
        ('float32', -9999.0, 'EPSG:4326', 16),
        ('uint8', 0, 'EPSG:3857', 64),  # the scene is smaller than a window
    ],
)
def test_batches_read_on_demand_equal_the_reader_thread(
    raster_writer: Callable[..., Path],
    make_spec: Callable[..., PredictionSpec],
    rng: np.random.Generator,
    dtype: str,
    nodata: float,
    crs: str,
    size: int,
) -> None:
    # On the CPU batches are read in the caller's thread (prefetch 0, issue 16):
    # the same batches, skips and values as the reader thread's.
    data = rng.integers(1, 50, (3, 45, 37)).astype(dtype)
    data[:, :20, :] = nodata  # whole windows without a valid pixel are skipped
    data[:, 30:33, 5:9] = nodata
    if dtype == 'float32':
        data[2, 40, 30] = np.nan
    path = raster_writer('s.tif', data, nodata=nodata, crs=crs, res=0.001)
    tiles = list(TileGrid(45, 37, size, 4))
    with SceneReader(path, make_spec()) as reader:
        read = {
            prefetch: list(iter_batches(reader, tiles, size, 3, prefetch=prefetch))
            for prefetch in (0, 2)
        }
    assert len(read[0]) == len(read[2]) >= 1
    for ahead, now in zip(read[2], read[0], strict=True):
        assert now.tiles == ahead.tiles and now.skipped == ahead.skipped
        np.testing.assert_array_equal(now.images, ahead.images)
        np.testing.assert_array_equal(now.valid, ahead.valid)
    windows = sum(len(b.tiles) + b.skipped for b in read[0])
    skipped = sum(b.skipped for b in read[0])
    assert windows == len(tiles)
    assert skipped >= (1 if size < 45 else 0), 'windows without valid pixels skipped'
    assert all(b.valid.any(axis=(1, 2)).all() for b in read[0] if b.tiles)


def test_batches_read_on_demand_stop_with_their_consumer(
    raster_writer: Callable[..., Path],
    make_spec: Callable[..., PredictionSpec],
    rng: np.random.Generator,
) -> None:
    path = raster_writer('s.tif', rng.integers(1, 50, (3, 600, 64)).astype('uint8'))
    tiles = list(TileGrid(600, 64, 16, 4))
    with SceneReader(path, make_spec()) as reader:
        batches = iter_batches(reader, tiles, 16, 2, prefetch=0)
        first = next(batches)
        batches.close()
        assert first.tiles == tiles[:2]
        assert reader._chunk is not None
        first, data, _ = reader._chunk
        # Nothing beyond the first read: READ_AHEAD_ROWS, to the end of a block row.
        assert first == 0
        assert data.shape[1] < READ_AHEAD_ROWS + reader.block_height < 600


def test_complex_sar_is_converted_by_the_model_sar_mode(
    raster_writer: Callable[..., Path], metadata: dict[str, Any], tmp_path: Path
) -> None:
    metadata['sensor'].update(
        bands=['VV'], in_chans=1, sar_mode='amplitude', nodata=None,
        statistics={'mean': [0.0], 'std': [1.0]},
    )  # fmt: skip
    spec = PredictionSpec.from_metadata(metadata)
    # |z| = 1 and 2 give classes 1 and 2; z = 0 carries no signal (nodata).
    data = np.ones((1, 16, 16), dtype=np.complex64)
    data[0, :, 8:] = 2j
    data[0, 0, 0] = 0
    scene = raster_writer('slc.tif', data)

    result = predict_scene(
        scene, ValueClassifier(), spec, tmp_path / 'm.tif', progress=False
    )

    with rasterio.open(result.output) as out:
        classes = out.read(1)
    assert (
        classes[0, 0] == 255
        and (classes[1:, :8] == 1).all()
        and (classes[:, 8:] == 2).all()
    )

    real = raster_writer('real.tif', np.ones((1, 8, 8), np.float32))
    with pytest.raises(IncompatibleRasterError, match='trained on complex SAR'):
        predict_scene(real, ValueClassifier(), spec, tmp_path / 'r.tif', progress=False)
    metadata['sensor']['sar_mode'] = None
    with pytest.raises(IncompatibleRasterError, match='holds complex SAR'):
        predict_scene(
            scene, ValueClassifier(), PredictionSpec.from_metadata(metadata),
            tmp_path / 'c.tif', progress=False,
        )  # fmt: skip


def test_far_off_resolution_is_resampled_to_the_training_one(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    metadata: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scene = raster_writer('fine.tif', rgb_scene(120, 80), nodata=0, res=2.5)
    metadata['sensor']['res'] = 10.0
    spec = PredictionSpec.from_metadata(metadata)

    result = predict_scene(scene, ConvNet(), spec, tmp_path / 'm.tif', progress=False)

    with rasterio.open(scene) as src, rasterio.open(result.output) as out:
        assert (out.width, out.height) == (20, 30)
        assert out.res == (10.0, 10.0) and out.bounds == src.bounds
    assert 'resampling it to 20 x 30 pixels' in caplog.text

    near = raster_writer('near.tif', rgb_scene(40, 40), nodata=0, res=12.0)
    result = predict_scene(near, ConvNet(), spec, tmp_path / 'n.tif', progress=False)
    with rasterio.open(result.output) as out:
        assert out.res == (12.0, 12.0), 'within tolerance: read as it is'


def test_real_sar_is_converted_as_training_converted_it(
    raster_writer: Callable[..., Path], metadata: dict[str, Any], tmp_path: Path
) -> None:
    # A model fine-tuned on linear power read as dB (issue 11).
    metadata['sensor'].update(
        bands=['VV'], in_chans=1, sar_scale='intensity', sar_mode='db', nodata=None,
        statistics={'mean': [0.0], 'std': [1.0]},
    )  # fmt: skip
    spec = PredictionSpec.from_metadata(metadata)
    # 10 log10 of these powers is 1 and 2 dB: classes 1 and 2; zero power is nodata.
    data = np.full((1, 16, 16), 10**0.1, dtype=np.float32)
    data[0, :, 8:] = 10**0.2
    data[0, 0, 0] = 0
    scene = raster_writer('sigma0_VV.tif', data)

    result = predict_scene(
        scene, ValueClassifier(), spec, tmp_path / 'm.tif', progress=False
    )

    with rasterio.open(result.output) as out:
        classes = out.read(1)
    assert classes[0, 0] == 255
    assert (classes[1:, :8] == 1).all() and (classes[:, 8:] == 2).all()
    assert spec.to_metadata()['sensor']['sar_scale'] == 'intensity'
