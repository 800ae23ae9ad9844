"""Prediction on the real samples in ../shared/data (skipped when absent)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from dspt_geo.predict import PredictionSpec, predict_scene

from .conftest import ConvNet


@pytest.mark.parametrize(
    ('relative', 'bands', 'nodata', 'sar_mode', 'res'),
    [
        ('optical/naip_20200831.tif', 4, 0, None, 5.0),
        ('optical/landsat7_rgb_byte.tif', 3, 0, None, 300.0),
        ('optical/landsat_2020_epsg4326.tif', 4, 0, None, 90.0),  # degrees: ~90 m
        ('sar/s1a_iw_vv_grd_db.tif', 1, -99, None, 20.0),
        ('sar/spacenet6_sar_vv.tif', 1, None, 'db', 2.5),  # complex SLC
    ],
)
def test_real_scenes_keep_their_grid_and_nodata(
    shared_data: Path,
    metadata: dict[str, Any],
    tmp_path: Path,
    relative: str,
    bands: int,
    nodata: float | None,
    sar_mode: str | None,
    res: float,
) -> None:
    scene = shared_data / relative
    metadata['sensor'].update(
        bands=None, in_chans=bands, nodata=nodata, sar_mode=sar_mode, res=res,
        statistics={'mean': [100.0] * bands, 'std': [50.0] * bands},
    )  # fmt: skip
    spec = PredictionSpec.from_metadata(metadata)

    result = predict_scene(
        scene, ConvNet(in_chans=bands), spec, tmp_path / 'out.tif', tile=128, overlap=32,
        probabilities=True, progress=False,
    )  # fmt: skip

    with rasterio.open(scene) as src, rasterio.open(result.output) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height) == (src.width, src.height)
        classes = out.read(1)
        data = src.read()
    if np.iscomplexobj(data):
        invalid = (data == 0).all(axis=0)
    elif nodata is not None:
        invalid = (data == nodata).all(axis=0)
    else:
        invalid = ~np.isfinite(data).all(axis=0)
    assert ((classes == 255) == invalid).all(), 'nodata in, nodata out'
    assert set(np.unique(classes[~invalid])) <= {0, 1, 2}
    assert result.valid_pixels == (~invalid).sum()
