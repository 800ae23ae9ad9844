from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from dspt_geo.predict import writers
from dspt_geo.predict.writers import CogWriter


def _write_cog(
    path: Path, data: np.ndarray, crs: str, **kwargs: object
) -> tuple[Path, bool]:
    count, height, width = data.shape
    writer = CogWriter(
        path,
        crs=rasterio.crs.CRS.from_string(crs),
        transform=from_origin(500_000, 4_000_000, 2.0, 2.0),
        width=width,
        height=height,
        count=count,
        blocksize=256,
        tags={'TASK': 'segment'},
        **kwargs,  # type: ignore[arg-type]
    )
    for row in range(0, height, 37):  # rows in strips, as predict finishes them
        writer.write(row, data[:, row : row + 37])
    in_memory = writer._data is not None
    return writer.commit(), in_memory


def _read(path: Path) -> tuple[object, ...]:
    with rasterio.open(path) as src:
        return (
            src.read(),
            src.read(out_shape=(src.count, src.height // 2, src.width // 2)),
            src.overviews(1),
            src.profile,
            src.tags(),
            src.descriptions,
            src.scales,
            src.colorinterp,
            src.colormap(1) if src.count == 1 else None,
        )


@pytest.mark.parametrize(
    ('count', 'crs', 'resampling'),
    [(1, 'EPSG:32633', 'mode'), (3, 'EPSG:4326', 'average')],
)
def test_memory_and_file_staging_give_the_same_cog(
    tmp_path: Path,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    crs: str,
    resampling: str,
) -> None:
    # Small COGs are staged in memory (issue 16), larger ones in a temporary
    # GeoTIFF: the COG must not depend on where it was staged.
    data = rng.integers(0, 4, (count, 300, 290)).astype(np.uint8)
    data[:, :40, :50] = 255  # nodata
    extra: dict[str, object] = {'overview_resampling': resampling}
    if count == 1:
        extra['colormap'] = {0: (1, 2, 3, 255), 255: (0, 0, 0, 0)}
        extra['descriptions'] = ('class',)
    else:
        extra['scales'] = [0.005] * count
        extra['descriptions'] = tuple(f'c{i}' for i in range(count))
    memory, in_memory = _write_cog(tmp_path / 'memory.tif', data, crs, **extra)
    assert in_memory
    monkeypatch.setattr(writers, '_MEMORY_PIXELS', 0)
    on_disk, in_memory = _write_cog(tmp_path / 'file.tif', data, crs, **extra)
    assert not in_memory

    a, b = _read(memory), _read(on_disk)
    np.testing.assert_array_equal(a[0], data)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y
    assert a[2] == [2], 'an overview'
    for path in (memory, on_disk):
        assert cog_validate(path)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file.tif', 'memory.tif'], (
        'no temporary file is left'
    )
