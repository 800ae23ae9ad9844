"""ONNX export of fine-tuned models, with the settings QGIS's Deepness plugin reads.

The exported graph takes **raw band values** as float32 ``(N, C, tile, tile)`` (the
numbers stored in the raster, in the model's band order) and does what
``dspt-geo predict`` does before the model: nodata and non-finite pixels are masked,
bands are standardised with the training statistics, masked pixels become 0. Its
output is class probabilities: ``(N, K, tile, tile)`` for segmentation (softmax over
classes, Deepness's *Segmentor* layout), ``(N, K)`` for classification. A consumer
needs no statistics and no dspt-geo.

Settings travel as ONNX metadata (string values, JSON-encoded, as Deepness expects):
``model_type``, ``class_names`` ({id: name}), ``resolution`` (cm per pixel),
``tiles_size``/``tile_size``, ``tiles_overlap`` (percent), ``seg_thresh``, and
``standardization_mean``/``standardization_std``. Deepness feeds 8-bit layers as
``value / 255`` and then standardises with these two keys; a mean of 0 and a std of
1/255 give the graph back the raw values, so the in-graph normalisation is the only
one. Key ``dspt_geo`` holds the model file's whole metadata as JSON.

Detection is not exported: torchvision's Faster R-CNN graph ends in data-dependent
post-processing (proposal NMS, per-class box decoding) that Deepness does not read
(it expects YOLO-style ``(N, boxes, 5 + K)`` outputs), so an exported detector
would run nowhere that dspt-geo targets.
"""

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, DsptGeoError
from ..models.finetuned import load_finetuned
from ..predict.spec import PredictionSpec

__all__ = ('EXPORTABLE_TASKS', 'RawInputModel', 'deepness_metadata', 'export_onnx')

logger = logging.getLogger(__name__)

#: Tasks whose models export to ONNX.
EXPORTABLE_TASKS = ('classify', 'segment')

#: Deepness's name for each task's model type (classification has none: Deepness
#: runs segmentors, detectors and regressors, not scene classifiers).
_DEEPNESS_TYPES = {'segment': 'Segmentor'}

#: The opset asked for: torch's exporter implements 18 and up (LayerNormalization
#: is native from 17; Deepness's onnxruntime runs 18).
OPSET = 18


class RawInputModel(nn.Module):
    """A fine-tuned model that takes raw band values and returns probabilities.

    Args:
        model: the task model (normalised input, logits out).
        spec: the model's prediction spec (statistics, nodata, task).

    .. versionadded:: 0.2
    """

    #: Buffers: the band means and inverse standard deviations, (1, C, 1, 1).
    mean: Tensor
    inv_std: Tensor

    def __init__(self, model: nn.Module, spec: PredictionSpec) -> None:
        """Wrap *model* with *spec*'s normalisation."""
        super().__init__()
        self.model = model
        self.register_buffer(
            'mean', torch.tensor(spec.statistics.mean).view(1, -1, 1, 1)
        )
        std = torch.tensor(spec.statistics.std).clamp_min(1e-6)
        self.register_buffer('inv_std', (1 / std).view(1, -1, 1, 1))
        self.nodata = spec.nodata
        self.sar = spec.sar

    def forward(self, images: Tensor) -> Tensor:
        """Probabilities of *images* ``(N, C, H, W)`` of raw band values."""
        valid = torch.isfinite(images).all(dim=1, keepdim=True)
        if self.nodata is not None:
            valid = valid & (images != self.nodata).any(dim=1, keepdim=True)
        if self.sar is not None:
            images, valid = self._backscatter(images, valid)
        normalised = (images - self.mean) * self.inv_std
        normalised = torch.where(valid, normalised, torch.zeros_like(normalised))
        return torch.softmax(self.model(normalised), dim=1)

    def _backscatter(self, images: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Real-valued SAR to the model's scale, as :meth:`SarConversion.apply`."""
        assert self.sar is not None
        scale, mode = self.sar.scale, self.sar.mode
        if scale != 'db':  # no signal in non-positive power or amplitude
            valid = valid & (images > 0).all(dim=1, keepdim=True)
            images = torch.where(valid, images, torch.ones_like(images))
        match scale, mode:
            case ('intensity', 'db'):
                images = 10 * torch.log10(images)
            case ('amplitude', 'db'):
                images = 20 * torch.log10(images)
            case ('intensity', 'amplitude'):
                images = torch.sqrt(images)
            case ('amplitude', 'intensity'):
                images = images * images
            case ('db', 'intensity'):
                images = torch.pow(10.0, images / 10)
            case ('db', 'amplitude'):
                images = torch.pow(10.0, images / 20)
        return images, valid


def deepness_metadata(metadata: dict[str, Any], spec: PredictionSpec) -> dict[str, str]:
    """The ONNX metadata for a model file's *metadata*: Deepness's keys and ours.

    Args:
        metadata: the model file's metadata.
        spec: its prediction spec.

    Returns:
        key -> JSON-encoded value.

    .. versionadded:: 0.2
    """
    values: dict[str, Any] = {
        'class_names': dict(enumerate(spec.class_names)),
        'tiles_size': spec.tile,
        'tile_size': spec.tile,  # the key Deepness reads in some releases
        'tiles_overlap': round(100 * spec.overlap / spec.tile),
        'standardization_mean': [0.0] * spec.in_chans,
        'standardization_std': [1 / 255] * spec.in_chans,
        'band_names': list(spec.bands),
    }
    if spec.task in _DEEPNESS_TYPES:
        values['model_type'] = _DEEPNESS_TYPES[spec.task]
    if spec.task == 'segment':
        values['seg_thresh'] = 0.5
    if spec.res is not None:
        values['resolution'] = round(100 * (spec.res[0] + spec.res[1]) / 2, 4)
    values['dspt_geo'] = metadata
    return {key: json.dumps(value) for key, value in values.items()}


def _import_onnx() -> Any:
    """The onnx package, or a one-line hint to install it."""
    try:
        import onnx
    except ImportError as error:
        msg = "ONNX export needs the onnx extra: pip install 'dspt-geo[onnx]'"
        raise DsptGeoError(msg) from error
    return onnx


def export_onnx(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    check: bool = True,
) -> Path:
    """Export a fine-tuned model file to ONNX (see the module docstring).

    Args:
        model_path: a ``model.safetensors`` from ``dspt-geo finetune``.
        out_path: the ``.onnx`` file to write (atomically).
        overwrite: replace an existing *out_path*.
        check: compare onnxruntime's output with torch's on a random tile, when
            onnxruntime is installed.

    Returns:
        the written path.

    Raises:
        CheckpointError: If the model file cannot be loaded.
        ConfigError: If the task cannot be exported, or *out_path* exists.
        DsptGeoError: If onnx is not installed, or the check fails.

    .. versionadded:: 0.2
    """
    onnx = _import_onnx()
    out = Path(out_path)
    if out.suffix.lower() != '.onnx':
        msg = f'--onnx {out}: the file name must end in .onnx'
        raise ConfigError(msg)
    if out.exists() and not overwrite:
        msg = f'{out} exists; give --overwrite to replace it'
        raise ConfigError(msg)
    model, metadata = load_finetuned(model_path)
    spec = PredictionSpec.from_metadata(metadata)
    if spec.task not in EXPORTABLE_TASKS:
        msg = (
            f'{model_path} is a {spec.task} model; ONNX export is not supported for '
            'detection yet: Faster R-CNN ends in data-dependent NMS and box decoding '
            'that Deepness does not read (it expects YOLO-style outputs); use '
            '`dspt-geo predict` for detections'
        )
        raise ConfigError(msg)
    if spec.sar is not None and spec.sar.scale == 'complex':
        msg = (
            f'{model_path} was trained on complex SAR; ONNX has no complex input, '
            'so export is not supported for it yet'
        )
        raise ConfigError(msg)
    wrapped = RawInputModel(model, spec).eval()
    example = _example_tile(spec, batch=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f'.{out.name}.', dir=out.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                wrapped,
                (example,),
                input_names=['images'],
                output_names=['probabilities'],
                dynamic_axes={'images': {0: 'batch'}, 'probabilities': {0: 'batch'}},
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        assert program is not None  # dynamo=True returns the program
        proto = program.model_proto
        for key, value in deepness_metadata(metadata, spec).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        if check:
            _check_parity(wrapped, tmp, spec)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        'wrote %s (%s, %d classes, tile %d)',
        out,
        spec.task,
        spec.num_classes,
        spec.tile,
    )
    return out


def _example_tile(spec: PredictionSpec, batch: int, seed: int = 0) -> Tensor:
    """Raw-valued random tiles around the training statistics."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor(spec.statistics.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.statistics.std).view(1, -1, 1, 1)
    noise = torch.randn(
        (batch, spec.in_chans, spec.tile, spec.tile), generator=generator
    )
    return (mean + 2 * std * noise).float()


def _check_parity(model: nn.Module, path: Path, spec: PredictionSpec) -> None:
    """Onnxruntime's output must equal torch's on a random batch (skipped without it)."""
    try:
        import onnxruntime
    except ImportError:
        logger.info('onnxruntime not installed: the export was not checked')
        return
    tiles = _example_tile(spec, batch=3, seed=1)
    with torch.no_grad():
        expected = model(tiles).numpy()
    session = onnxruntime.InferenceSession(
        str(path), providers=['CPUExecutionProvider']
    )
    (got,) = session.run(None, {'images': tiles.numpy()})
    error = float(np.abs(got - expected).max())
    if not error <= 1e-4:
        msg = f'the ONNX graph differs from the torch model by {error:.2e} (> 1e-4)'
        raise DsptGeoError(msg)
    logger.info('onnxruntime matches torch within %.1e', error)
