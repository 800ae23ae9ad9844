"""dspt-geo export --onnx: raw band values in, probabilities out, Deepness metadata."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from dspt_geo.data.sar import SarConversion
from dspt_geo.data.transforms import normalise
from dspt_geo.export import RawInputModel
from dspt_geo.models import load_finetuned
from dspt_geo.predict.spec import PredictionSpec

onnx = pytest.importorskip('onnx')
onnxruntime = pytest.importorskip('onnxruntime')


def _session(path: Path) -> 'onnxruntime.InferenceSession':
    return onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def _torch_probabilities(model_file: Path, raw: np.ndarray) -> np.ndarray:
    """What predict computes for raw tiles: nodata mask, normalise, model, softmax."""
    model, metadata = load_finetuned(model_file)
    spec = PredictionSpec.from_metadata(metadata)
    images = torch.from_numpy(raw)
    valid = torch.isfinite(images).all(dim=1)
    if spec.nodata is not None:
        valid &= (images != spec.nodata).any(dim=1)
    with torch.no_grad():
        logits = model(normalise(images, valid, spec.statistics))
    return torch.softmax(logits, dim=1).numpy()


@pytest.mark.parametrize('task', ['classify', 'segment'])
def test_onnx_matches_torch_on_random_tiles(task, trained, cli_run, tmp_path):
    model_file = trained(task) / 'model.safetensors'
    out = tmp_path / f'{task}.onnx'
    result = cli_run('export', model_file, '--onnx', out)
    assert result.exit_code == 0, result.output
    spec = PredictionSpec.from_metadata(load_finetuned(model_file)[1])
    rng = np.random.default_rng(3)
    mean = np.array(spec.statistics.mean, dtype=np.float32)[None, :, None, None]
    std = np.array(spec.statistics.std, dtype=np.float32)[None, :, None, None]
    for batch in (1, 5):  # the batch axis is dynamic
        raw = mean + 2 * std * rng.standard_normal(
            (batch, spec.in_chans, spec.tile, spec.tile), dtype=np.float32
        )
        raw[0, :, :3, :3] = np.nan  # masked like nodata, as predict does
        (got,) = _session(out).run(None, {'images': raw.astype(np.float32)})
        expected = _torch_probabilities(model_file, raw.astype(np.float32))
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4
        assert np.allclose(got.sum(axis=1), 1, atol=1e-5)


def test_metadata_in_deepness_keys(trained, cli_run, tmp_path):
    model_file = trained('segment') / 'model.safetensors'
    out = tmp_path / 'seg.onnx'
    assert cli_run('export', model_file, '--onnx', out).exit_code == 0
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    _, metadata = load_finetuned(model_file)
    spec = PredictionSpec.from_metadata(metadata)
    assert meta['model_type'] == 'Segmentor'
    assert meta['class_names'] == {str(i): n for i, n in enumerate(spec.class_names)}
    assert meta['tiles_size'] == spec.tile == meta['tile_size']
    assert meta['tiles_overlap'] == round(100 * spec.overlap / spec.tile)
    assert meta['seg_thresh'] == 0.5
    assert meta['resolution'] == pytest.approx(100 * spec.res[0], rel=1e-3)
    # Deepness divides 8-bit values by 255, then standardises: this undoes it.
    assert meta['standardization_std'] == [1 / 255] * spec.in_chans
    assert meta['standardization_mean'] == [0.0] * spec.in_chans
    assert meta['dspt_geo']['task'] == 'segment'
    assert meta['dspt_geo']['sensor']['bands'] == list(spec.bands)
    session = _session(out)
    (image,) = session.get_inputs()
    assert image.shape[1:] == [spec.in_chans, spec.tile, spec.tile]
    assert not isinstance(image.shape[0], int)  # dynamic batch


def test_detection_and_bad_paths_are_one_message(
    trained, cli_run, user_error, tmp_path
):
    detect = trained('detect') / 'model.safetensors'
    user_error(
        cli_run('export', detect, '--onnx', tmp_path / 'det.onnx'),
        'not supported for detection',
    )
    assert not list(tmp_path.iterdir())
    segment = trained('segment') / 'model.safetensors'
    user_error(cli_run('export', segment, '--onnx', tmp_path / 'seg.bin'), '.onnx')
    out = tmp_path / 'seg.onnx'
    out.write_bytes(b'keep me')
    user_error(cli_run('export', segment, '--onnx', out), '--overwrite')
    assert out.read_bytes() == b'keep me'
    assert cli_run('export', segment, '--onnx', out, '--overwrite').exit_code == 0
    assert onnx.load(str(out)).graph.input[0].name == 'images'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['seg.onnx']


def test_missing_onnx_gives_a_hint(trained, cli_run, user_error, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == 'onnx':
            raise ImportError('No module named onnx')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_onnx)
    model_file = trained('classify') / 'model.safetensors'
    user_error(
        cli_run('export', model_file, '--onnx', tmp_path / 'c.onnx'), 'dspt-geo[onnx]'
    )


def test_uint8_model_runs_on_a_real_geotiff_window(
    shared_data, tiny, cli_run, tmp_path
):
    """Fine-tune on real 3-band uint8 Landsat, export, run onnxruntime on a window."""
    scene = shared_data / 'optical' / 'landsat7_rgb_byte.tif'
    with rasterio.open(scene) as src:
        image = src.read()
        profile = src.profile
    bright = image.astype(np.float32).mean(axis=0)
    labels = np.where(
        image.any(axis=0), (bright > np.median(bright)).astype(np.uint8), 255
    )
    label_path = tmp_path / 'labels.tif'
    profile.update(count=1, dtype='uint8', nodata=255)
    with rasterio.open(label_path, 'w', **profile) as dst:
        dst.write(labels, 1)
    run = tmp_path / 'run'
    result = cli_run(
        'finetune', 'segment', '--images', scene, '--labels', label_path,
        '--out', run, *tiny.vit, *tiny.heads['segment'], '--image-size', '32',
        '--steps', '4', '--batch-size', '4',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model_file = run / 'model.safetensors'
    out = tmp_path / 'landsat.onnx'
    assert cli_run('export', model_file, '--onnx', out).exit_code == 0
    with rasterio.open(scene) as src:
        window = src.read(window=Window(300, 300, 32, 32)).astype(np.float32)
    raw = window[None]
    (got,) = _session(out).run(None, {'images': raw})
    expected = _torch_probabilities(model_file, raw)
    assert got.shape == (1, 2, 32, 32)
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize('scale', ['intensity', 'amplitude', 'db'])
def test_sar_conversion_is_folded_into_the_graph(scale):
    """The graph converts real-valued SAR as predict's reader does, nodata included."""
    spec = PredictionSpec.from_metadata(
        {
            'task': 'segment',
            'classes': [{'name': 'a'}, {'name': 'b'}],
            'sensor': {
                'in_chans': 2, 'bands': ['VV', 'VH'], 'nodata': -9999.0,
                'statistics': {'mean': [-12.0, -18.0], 'std': [4.0, 5.0]},
                **SarConversion(scale, 'db').to_dict(),
            },
            'tile': {'size': 8, 'overlap': 2},
        }
    )  # fmt: skip
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.001, 0.5, (2, 2, 8, 8)).astype(np.float32)
    if scale == 'db':
        raw = 10 * np.log10(raw)
    raw[0, :, 0, 0] = -9999.0  # nodata
    raw[1, 0, 1, 1] = 0.0 if scale != 'db' else np.nan  # no signal
    wrapped = RawInputModel(torch.nn.Identity(), spec)
    with torch.no_grad():
        got = wrapped(torch.from_numpy(raw)).numpy()
    converted = spec.sar.apply(raw, spec.nodata)
    images = torch.from_numpy(converted)
    valid = torch.isfinite(images).all(dim=1)
    expected = torch.softmax(normalise(images, valid, spec.statistics), dim=1).numpy()
    assert np.abs(got - expected).max() < 1e-5
    assert not valid[0, 0, 0] and not valid[1, 1, 1]
