import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate

from dspt_geo.data.transforms import normalise
from dspt_geo.errors import DsptGeoError, IncompatibleRasterError, RasterReadError
from dspt_geo.predict import PredictionSpec, autotile, predict_scene
from dspt_geo.predict.outputs import fill_uint8, first_max_index
from dspt_geo.predict.run import PROBABILITY_SCALE, default_batch_size

from .conftest import ConvNet, ValueClassifier


def whole_image_classes(
    model: torch.nn.Module, path: Path, spec: PredictionSpec
) -> np.ndarray:
    """Argmax of the model run on the whole scene at once (and the top-2 gap)."""
    with rasterio.open(path) as src:
        image = torch.from_numpy(src.read().astype(np.float32))[None]
        valid = (image != src.nodata).any(dim=1)
    with torch.no_grad():
        logits = model(normalise(image, valid, spec.statistics))[0]
    top2 = logits.topk(2, dim=0).values
    return logits.argmax(0).numpy(), (top2[0] - top2[1]).numpy(), valid[0].numpy()


@pytest.mark.parametrize('batch_size', [3, None])
@pytest.mark.parametrize(('height', 'width', 'tile'), [(96, 128, 48), (101, 77, 40)])
def test_prediction_equals_the_whole_image_run(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
    height: int,
    width: int,
    tile: int,
    batch_size: int | None,
) -> None:
    data = rgb_scene(height, width)
    data[:, :10, :15] = 0  # a nodata corner
    scene = raster_writer(
        'scene.tif', data, nodata=0, descriptions=['red', 'green', 'blue']
    )
    spec = make_spec()
    model = ConvNet()

    result = predict_scene(
        scene, model, spec, tmp_path / 'out' / 'mask.tif', tile=tile, overlap=16,
        batch_size=batch_size, progress=False,
    )  # fmt: skip

    cpu = torch.device('cpu')
    assert result.batch_size == (batch_size or default_batch_size(tile, cpu))
    with rasterio.open(result.output) as out:
        classes = out.read(1)
    expected, gap, valid = whole_image_classes(model, scene, spec)
    assert (classes[~valid] == 255).all(), 'nodata in, nodata out'
    differs = (classes != expected) & valid
    assert not differs.any() or gap[differs].max() < 1e-4, 'only float ties may differ'
    assert result.valid_pixels == valid.sum() and not result.all_nodata
    assert model.training, 'the model is put back in training mode'


def test_the_default_batch_holds_about_the_same_pixels_at_every_window_size() -> None:
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert [default_batch_size(size, cpu) for size in (40, 64, 128, 256, 512)] == [
        82,
        32,
        8,
        2,
        1,
    ]
    assert default_batch_size(64, cuda) == 32 and default_batch_size(256, cuda) == 8


def test_output_is_georeferenced_like_the_input_and_a_styled_cog(
    raster_writer: Callable[..., Path],
    make_spec: Callable[..., PredictionSpec],
    identity_metadata: dict[str, Any],
    tmp_path: Path,
) -> None:
    # Values 0..2 are classes, 255 is nodata; the model returns the value's class.
    rows, cols = np.mgrid[0:600, 0:700]
    data = ((rows // 50 + cols // 70) % 3).astype(np.uint8)
    data[500:, :100] = 255
    scene = raster_writer(
        'scene.tif', data, nodata=255, crs='EPSG:32631', origin=(600_000.0, 4_000_000.0),
        res=20.0, descriptions=['value'],
    )  # fmt: skip
    spec = PredictionSpec.from_metadata(identity_metadata)

    result = predict_scene(
        scene, ValueClassifier(), spec, tmp_path / 'mask.tif', tile=128, overlap=32,
        probabilities=True, progress=False, blocksize=256,
    )  # fmt: skip

    with rasterio.open(scene) as src, rasterio.open(result.output) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height, out.count, out.dtypes[0]) == (
            700,
            600,
            1,
            'uint8',
        )
        assert out.nodata == 255
        np.testing.assert_array_equal(out.read(1), data)
        # A Cloud-Optimized GeoTIFF: GDAL recognises the layout, tiled, compressed,
        # internal overviews, and the IFD/data order is right.
        structure = out.tags(ns='IMAGE_STRUCTURE')
        assert structure['LAYOUT'] == 'COG' and structure['COMPRESSION'] == 'DEFLATE'
        assert structure.get('PREDICTOR') == '2'
        assert out.profile['tiled'] and out.block_shapes[0] == (256, 256)
        assert out.overviews(1) == [2, 4], 'internal overviews'
        assert out.colormap(1)[1][:3] == (51, 160, 44) and out.colormap(1)[255][3] == 0
        assert out.descriptions == ('class',)
        assert '"forest"' in out.tags()['CLASS_NAMES']
    valid, errors, _ = cog_validate(result.output, strict=True, quiet=True)
    assert valid, errors

    # Class names: categories and a raster attribute table in the PAM sidecar.
    (aux,) = result.sidecars
    assert aux == tmp_path / 'mask.tif.aux.xml'
    band = ET.parse(aux).getroot().find('PAMRasterBand')
    assert [c.text for c in band.find('CategoryNames')] == ['water', 'forest', 'urban']
    rows_xml = band.find('GDALRasterAttributeTable').findall('Row')
    assert [r[1].text for r in rows_xml] == ['water', 'forest', 'urban']
    assert result.style == tmp_path / 'mask.qml' and result.style.is_file()

    with rasterio.open(result.probabilities) as probs:
        assert probs.count == 3 and probs.descriptions == spec.class_names
        assert probs.transform == out.transform
        stack = probs.read()
        assert probs.scales == (1 / PROBABILITY_SCALE,) * 3
    valid = data != 255
    assert (stack[:, ~valid] == 255).all()
    np.testing.assert_array_equal(stack[:, valid].argmax(axis=0), data[valid])
    assert (
        np.abs(stack[:, valid].sum(axis=0).astype(int) - PROBABILITY_SCALE).max() <= 2
    )
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith('.')]
    assert leftovers == [], 'no temporary file is left behind'


def test_small_scene_is_padded(
    raster_writer: Callable[..., Path],
    identity_metadata: dict[str, Any],
    tmp_path: Path,
) -> None:
    data = np.array([[0, 1, 2, 1, 0]] * 7, dtype=np.uint8)
    scene = raster_writer('small.tif', data, nodata=255)
    spec = PredictionSpec.from_metadata(identity_metadata)

    result = predict_scene(
        scene, ValueClassifier(), spec, tmp_path / 'm.tif', progress=False
    )

    with rasterio.open(result.output) as out:
        assert (out.width, out.height) == (5, 7)
        np.testing.assert_array_equal(out.read(1), data)
    assert result.windows == result.windows_run == 1


def test_bands_are_selected_by_name(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
) -> None:
    rgb = rgb_scene(40, 50)
    nir = np.full((1, 40, 50), 7, dtype=np.uint8)
    # The scene has more bands than the model, in another order.
    four = np.concatenate([nir, rgb[2:3], rgb[1:2], rgb[0:1]])
    scene = raster_writer(
        'four.tif', four, nodata=0, descriptions=['nir', 'Blue', 'Green', 'Red']
    )
    reference = raster_writer(
        'rgb.tif', rgb, nodata=0, descriptions=['red', 'green', 'blue']
    )
    spec = make_spec()

    a = predict_scene(scene, ConvNet(), spec, tmp_path / 'a.tif', progress=False)
    b = predict_scene(reference, ConvNet(), spec, tmp_path / 'b.tif', progress=False)

    with rasterio.open(a.output) as first, rasterio.open(b.output) as second:
        np.testing.assert_array_equal(first.read(), second.read())


@pytest.mark.parametrize(
    ('count', 'descriptions', 'match'),
    [
        (4, None, r'has 4 bands .* model expects 3 \(red, green, blue\)'),
        (
            3,
            ['VV', 'VH', 'ratio'],
            r'has bands \(VV, VH, ratio\) but the model was trained on',
        ),
    ],
)
def test_a_different_band_layout_is_refused(
    raster_writer: Callable[..., Path],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
    count: int,
    descriptions: list[str] | None,
    match: str,
) -> None:
    scene = raster_writer(
        's.tif', np.ones((count, 8, 8), np.uint8), descriptions=descriptions
    )
    with pytest.raises(IncompatibleRasterError, match=match):
        predict_scene(scene, ConvNet(), make_spec(), tmp_path / 'm.tif', progress=False)
    assert not (tmp_path / 'm.tif').exists()


def test_unnamed_bands_of_the_right_count_are_used_in_order(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
) -> None:
    scene = raster_writer('s.tif', rgb_scene(20, 20), nodata=0)
    result = predict_scene(
        scene, ConvNet(), make_spec(), tmp_path / 'm.tif', progress=False
    )
    assert result.windows_run == 1


def test_all_nodata_scene_writes_all_nodata_and_warns(
    raster_writer: Callable[..., Path],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scene = raster_writer('empty.tif', np.zeros((3, 150, 130), np.uint8), nodata=0)
    calls = []

    class Spy(ConvNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            return super().forward(x)

    with caplog.at_level(logging.WARNING, logger='dspt_geo.predict'):
        result = predict_scene(
            scene, Spy(), make_spec(), tmp_path / 'm.tif', progress=False
        )

    assert calls == [], 'windows without a valid pixel are not run'
    assert result.all_nodata and result.windows_run == 0 and result.windows > 1
    with rasterio.open(result.output) as out:
        assert (out.read(1) == 255).all() and (out.width, out.height) == (130, 150)
    assert 'holds no valid pixel' in caplog.text


def test_windows_without_valid_pixels_are_skipped(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = rgb_scene(200, 200)
    data[:, :, 100:] = 0
    scene = raster_writer('half.tif', data, nodata=0)

    result = predict_scene(
        scene,
        ConvNet(),
        make_spec(),
        tmp_path / 'm.tif',
        tile=64,
        overlap=16,
        progress=True,
    )

    assert 0 < result.windows_run < result.windows
    assert f'{result.windows}/{result.windows}' in capsys.readouterr().err, (
        'progress bar'
    )
    with rasterio.open(result.output) as out:
        classes = out.read(1)
    assert (classes[:, 100:] == 255).all() and (classes[:, :100] != 255).all()


@pytest.mark.filterwarnings('ignore::rasterio.errors.NotGeoreferencedWarning')
def test_unreadable_scene_and_unwritable_output_give_one_clear_error(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
) -> None:
    spec = make_spec()
    garbage = tmp_path / 'garbage.tif'
    garbage.write_text('not a raster')
    with pytest.raises(RasterReadError, match=r'GDAL cannot open .*garbage\.tif'):
        predict_scene(garbage, ConvNet(), spec, tmp_path / 'a.tif', progress=False)
    with pytest.raises(RasterReadError, match='GDAL cannot open'):
        predict_scene(
            tmp_path / 'missing.tif',
            ConvNet(),
            spec,
            tmp_path / 'a.tif',
            progress=False,
        )

    scene = raster_writer('s.tif', rgb_scene(20, 20), nodata=0)
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(DsptGeoError, match=r'file/out/m\.tif cannot be created'):
        predict_scene(scene, ConvNet(), spec, blocker / 'out' / 'm.tif', progress=False)

    ungeoreferenced = raster_writer('plain.tif', rgb_scene(20, 20), crs=None)
    with pytest.raises(IncompatibleRasterError, match='not georeferenced'):
        predict_scene(
            ungeoreferenced, ConvNet(), spec, tmp_path / 'b.tif', progress=False
        )


def test_existing_output_needs_overwrite(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
) -> None:
    scene = raster_writer('s.tif', rgb_scene(20, 20), nodata=0)
    out = tmp_path / 'm.tif'
    predict_scene(scene, ConvNet(), make_spec(), out, progress=False)
    with pytest.raises(DsptGeoError, match='exists; pass overwrite'):
        predict_scene(scene, ConvNet(), make_spec(), out, progress=False)
    predict_scene(scene, ConvNet(), make_spec(), out, progress=False, overwrite=True)


def test_a_failing_run_leaves_no_file_under_the_final_name(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    make_spec: Callable[..., PredictionSpec],
    tmp_path: Path,
) -> None:
    scene = raster_writer('s.tif', rgb_scene(200, 200), nodata=0)
    out_dir = tmp_path / 'out'

    class Crash(ConvNet):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Crash.calls += 1
            if Crash.calls == 3:
                raise KeyboardInterrupt
            return super().forward(x)

    with pytest.raises(KeyboardInterrupt):
        predict_scene(
            scene, Crash(), make_spec(), out_dir / 'm.tif', tile=64, overlap=16,
            batch_size=2, probabilities=True, progress=False,
        )  # fmt: skip
    assert os.listdir(out_dir) == [], 'neither outputs nor temporary files remain'


def test_a_killed_run_leaves_only_a_hidden_temporary_file(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    metadata: dict[str, Any],
    tmp_path: Path,
) -> None:
    scene = raster_writer('s.tif', rgb_scene(300, 300), nodata=0)
    out = tmp_path / 'out' / 'm.tif'
    script = f"""
import json, os, signal, torch
from dspt_geo.predict import PredictionSpec, predict_scene
class Killer(torch.nn.Module):
    calls = 0
    def forward(self, x):
        Killer.calls += 1
        if Killer.calls == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(x.shape[0], 3, *x.shape[2:])
spec = PredictionSpec.from_metadata(json.loads({json.dumps(json.dumps(metadata))}))
predict_scene({str(scene)!r}, Killer(), spec, {str(out)!r}, tile=64, overlap=16,
              batch_size=2, progress=False)
"""
    done = subprocess.run(
        [sys.executable, '-c', script], check=False, capture_output=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL
    assert not out.exists()
    assert all(name.startswith('.') for name in os.listdir(out.parent))


class SlowConvNet(ConvNet):
    """:class:`ConvNet` that takes 50 ms per window on top of its work."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05 * len(x))
        return super().forward(x)


def _auto_scene(
    raster_writer: Callable[..., Path], rgb_scene: Callable[[int, int], np.ndarray]
) -> Path:
    """The 150 x 400 px RGB scene of the tile-auto tests (24 windows of 64 px)."""
    return raster_writer(
        'scene.tif',
        rgb_scene(150, 400),
        nodata=0,
        descriptions=['red', 'green', 'blue'],
    )


def test_tile_auto_equals_the_default_tiling(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    metadata: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The search's rules without its budget (tested below): this scene is too
    # small for a search within the budget.
    monkeypatch.setattr(autotile, 'AUTO_BUDGET', math.inf)
    scene = _auto_scene(raster_writer, rgb_scene)
    fixed = PredictionSpec.from_metadata(metadata)
    metadata['model'] = {'patch_size': 8}  # the model takes any multiple of 8 px
    sized = PredictionSpec.from_metadata(metadata)
    model = SlowConvNet()  # each window costs 50 ms: the fewest windows win

    default = predict_scene(scene, model, sized, tmp_path / 'a.tif', progress=False)
    auto = predict_scene(
        scene, model, sized, tmp_path / 'b.tif', tile='auto', progress=False
    )
    kept = predict_scene(
        scene, model, fixed, tmp_path / 'c.tif', tile='auto', progress=False
    )

    assert default.tile == kept.tile == 64, 'no patch size: the training tile only'
    # Candidates 64, 128 and 144 (the scene's side on the patch grid) need 24, 8
    # and 6 windows; checking 128 px costs 9 windows of 64 px and saves 16, while
    # 144 px would save 2 windows for a check of 9.
    assert auto.tile == 128
    with rasterio.open(default.output) as a, rasterio.open(auto.output) as b:
        first, second = a.read(1), b.read(1)
    _, gap, _ = whole_image_classes(model, scene, sized)
    differs = first != second
    assert not differs.any() or gap[differs].max() < 1e-4, 'only float ties may differ'
    assert auto.valid_pixels == default.valid_pixels


def test_tile_auto_keeps_the_training_tile_when_a_search_would_not_pay(
    raster_writer: Callable[..., Path],
    rgb_scene: Callable[[int, int], np.ndarray],
    metadata: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scene = _auto_scene(raster_writer, rgb_scene)
    metadata['model'] = {'patch_size': 8}
    spec = PredictionSpec.from_metadata(metadata)
    model = SlowConvNet()
    with caplog.at_level(logging.INFO, logger='dspt_geo.predict.autotile'):
        started = time.perf_counter()
        auto = predict_scene(
            scene, model, spec, tmp_path / 'a.tif', tile='auto', progress=False
        )
        seconds = time.perf_counter() - started
    # 24 windows of 64 px, 50 ms each: the budget is 20 % of 1.2 s, less than
    # timing the training tile itself; probing 128 px would take as long again.
    assert auto.tile == 64
    assert 'would exceed the search budget' in caplog.text
    assert 'agreement' not in caplog.text, 'no candidate was checked'
    # The training tile's probe (2 calls of 8 windows) and the run's 24 windows.
    assert seconds < (2 * 8 + 24) * 0.05 + 1.0


@pytest.mark.parametrize('classes', [1, 2, 3, 7])
def test_first_max_index_is_torch_max_index(classes: int) -> None:
    # Rows' classes come from one comparison per class (issue 16); they must be
    # torch.max's indices, the first of equal maxima included.
    generator = torch.Generator().manual_seed(classes)
    logits = torch.randint(-3, 4, (classes, 48, 90), generator=generator).float()
    logits[:, 0, 0] = 2.0  # all classes tie
    logits[:, 0, 1] = torch.linspace(-1, 1, classes)  # the last is largest
    logits[-1, 1, :5] = -0.0  # signed zeros tie with zeros
    logits[0, 1, :5] = 0.0
    expected = logits.max(dim=0).indices
    found = first_max_index(logits)
    assert found.dtype == torch.uint8
    assert torch.equal(found.long(), expected)
    assert found[0, 0] == 0 and found[0, 1] == classes - 1
    if classes > 1:
        assert (found > 0).any(), 'not all first'
        with_nan = logits.clone()
        with_nan[1, 2, 3] = float('nan')
        assert torch.equal(
            first_max_index(with_nan).long(), with_nan.max(dim=0).indices
        )
        with_inf = logits.clone()
        with_inf[1, 2, 3], with_inf[0, 2, 4] = float('inf'), float('-inf')
        assert torch.equal(
            first_max_index(with_inf).long(), with_inf.max(dim=0).indices
        )


@pytest.mark.parametrize('shape', [(48, 90), (3, 48, 90)])
def test_fill_uint8_is_masked_fill(shape: tuple[int, ...]) -> None:
    # Nodata and classes are set by arithmetic (issue 16); the bytes must be
    # masked_fill_'s, with a mask broadcast over the classes of probabilities.
    generator = torch.Generator().manual_seed(len(shape))
    values = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    mask = torch.rand(shape[-2:], generator=generator) > 0.5
    for value in (0, 7, 255):
        expected = values.clone().masked_fill_(mask, value)
        assert torch.equal(fill_uint8(values.clone(), mask, value), expected)
        assert not torch.equal(expected, values), 'the mask changes values'
