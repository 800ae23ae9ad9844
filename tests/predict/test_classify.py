from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from dspt_geo.predict import PredictionSpec, predict_scene

from .conftest import MaxClassifier


def test_one_class_per_window_on_a_coarse_grid(
    raster_writer: Callable[..., Path],
    identity_metadata: dict[str, Any],
    tmp_path: Path,
) -> None:
    identity_metadata['task'] = 'classify'
    spec = PredictionSpec.from_metadata(identity_metadata)
    cells = np.array([[0, 1, 2, 1], [2, 255, 0, 1], [1, 1, 0, 2]], dtype=np.uint8)
    data = np.kron(cells, np.ones((32, 32), dtype=np.uint8))  # 96 x 128
    scene = raster_writer('cells.tif', data, nodata=255, res=5.0)

    result = predict_scene(
        scene, MaxClassifier(), spec, tmp_path / 'grid.tif', tile=32, probabilities=True,
        progress=False,
    )  # fmt: skip

    with rasterio.open(scene) as src, rasterio.open(result.output) as out:
        assert (out.width, out.height) == (4, 3) and out.crs == src.crs
        assert out.transform == src.transform * Affine.scale(32)
        np.testing.assert_array_equal(out.read(1), cells)
        assert out.colormap(1)[2][:3] == (227, 26, 28)
        assert out.tags()['TASK'] == 'classify'
    valid, errors, _ = cog_validate(result.output, strict=True, quiet=True)
    assert valid, errors
    assert result.windows == 12 and result.windows_run == 11
    assert result.style is not None and result.style.is_file()
    with rasterio.open(result.probabilities) as probs:
        stack = probs.read()
    assert (stack[:, 1, 1] == 255).all()
    np.testing.assert_array_equal(
        stack.argmax(axis=0)[cells != 255], cells[cells != 255]
    )


def test_partial_cells_reach_past_the_scene(
    raster_writer: Callable[..., Path],
    identity_metadata: dict[str, Any],
    tmp_path: Path,
) -> None:
    identity_metadata['task'] = 'classify'
    spec = PredictionSpec.from_metadata(identity_metadata)
    data = np.zeros((40, 70), dtype=np.uint8)
    data[:, 64:] = 2  # the last, partial column of cells
    scene = raster_writer('s.tif', data, nodata=255)

    result = predict_scene(
        scene, MaxClassifier(), spec, tmp_path / 'g.tif', tile=32, progress=False
    )

    with rasterio.open(result.output) as out:
        assert (out.width, out.height) == (3, 2)
        # The last column's window is moved back inside the scene, so it sees the
        # partial cell (value 2) with data of its neighbour.
        np.testing.assert_array_equal(out.read(1), [[0, 0, 2], [0, 0, 2]])
