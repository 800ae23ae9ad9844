"""What prediction needs to know about a fine-tuned model: :class:`PredictionSpec`.

A fine-tuned model file carries one JSON object (see
:mod:`dspt_geo.models.model_file`); :meth:`PredictionSpec.from_metadata` reads this
schema from it (keys not listed are ignored, so the object may hold more)::

    {
      'task': 'segment' | 'classify' | 'detect',
      'classes': [{'name': str, 'colour': [r, g, b]}, ...],
      'sensor': {
        'name': str,
        'bands': [str, ...],          # in the order the model expects
        'in_chans': int,              # == len(bands)
        'nodata': float | null,       # training's nodata value
        'sar_scale': 'complex' | 'intensity' | 'amplitude' | 'db' | null,  # SAR only
        'sar_mode': 'db' | 'amplitude' | 'intensity' | null,  # SAR only
        'statistics': {'mean': [...], 'std': [...], ...},  # one value per band
        'res': float | [x, y] | null  # optional: training pixel size in metres
      },
      'tile': {'size': int, 'overlap': int},
      'score_threshold': float | null, # detection only (default 0.5)
      'max_objects': int | null,       # detection only: most objects in a tile
      'model': {'patch_size': int}     # optional: the model takes any window
    }                                  # that is a multiple of this

``classes`` are the model's outputs in order: segmentation and classification
logits have one channel per class and the written class raster holds the class
index (0 .. K-1); detection labels follow torchvision (1 .. K, 0 is background),
so label ``k`` is ``classes[k - 1]`` and is written as ``class_id = k - 1``.
``colour`` may be omitted (a fixed palette is used). ``statistics`` is what
:meth:`dspt_geo.data.statistics.BandStatistics.to_dict` writes; only ``mean`` and
``std`` are required. ``sar_mode`` is set when the model was trained on SAR: the
backscatter scale it saw, converted from the stored ``sar_scale`` (absent: complex)
by :class:`dspt_geo.data.sar.SarConversion`. ``res``, when
given, lets prediction resample scenes of a very different resolution to the
training one (see :func:`dspt_geo.predict.run.predict_scene`). ``max_objects``,
counted from the training labels, sizes the detector's work per window
(:func:`dspt_geo.predict.detections.detection_limits`). ``model.patch_size``, when
given, says that the model takes windows of any multiple of it (a ViT with
position embeddings computed for the input size), which lets ``tile='auto'`` use
windows larger than the training tile.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, get_args

from ..data.sar import SarConversion
from ..data.statistics import BandStatistics
from ..errors import CheckpointError

__all__ = ('DEFAULT_PALETTE', 'TASKS', 'PredictionSpec', 'Task')

#: What the model predicts: one class per pixel, per window, or boxes.
Task = Literal['segment', 'classify', 'detect']
TASKS: tuple[str, ...] = get_args(Task)

#: Colours of classes that name none (ColorBrewer Paired, then Set1).
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 120, 180), (51, 160, 44), (227, 26, 28), (255, 127, 0), (106, 61, 154),
    (177, 89, 40), (166, 206, 227), (178, 223, 138), (251, 154, 153),
    (253, 191, 111), (202, 178, 214), (255, 255, 153), (228, 26, 28),
    (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 255, 51), (166, 86, 40),
    (247, 129, 191), (153, 153, 153),
)  # fmt: skip

#: Class rasters are uint8 with 255 as nodata, so at most 255 classes.
MAX_RASTER_CLASSES = 255


@dataclass(frozen=True)
class PredictionSpec:
    """How a fine-tuned model is fed and what its outputs mean.

    Attributes:
        task: ``'segment'``, ``'classify'`` or ``'detect'``.
        class_names: one name per class, in output order.
        class_colours: one RGB triple (0-255) per class.
        bands: band names in the order the model expects.
        in_chans: number of input channels (``len(bands)``).
        statistics: per-band mean and std that training normalised with.
        nodata: training's nodata value (used when a scene declares none).
        sar: conversion of SAR scenes, or None when the model was not trained on
            SAR.
        tile: default window size in pixels.
        overlap: default overlap of neighbouring windows in pixels.
        score_threshold: detections scoring below are dropped.
        sensor: name of the training sensor group.
        res: training pixel size (x, y) in metres, if known.
        max_objects: most objects one training tile held (detection), if known.
        patch_size: the model takes windows of any multiple of this size; None
            when it takes only the training tile's size.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       Added *max_objects* and *patch_size* (issue 16).
    """

    task: Task
    class_names: tuple[str, ...]
    class_colours: tuple[tuple[int, int, int], ...]
    bands: tuple[str, ...]
    in_chans: int
    statistics: BandStatistics
    nodata: float | None = None
    sar: SarConversion | None = None
    tile: int = 256
    overlap: int = 32
    score_threshold: float = 0.5
    sensor: str = ''
    res: tuple[float, float] | None = None
    max_objects: int | None = None
    patch_size: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (K)."""
        return len(self.class_names)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> 'PredictionSpec':
        """Read the model file's metadata (schema in the module docstring).

        Args:
            metadata: the model file's JSON object.

        Returns:
            the spec.

        Raises:
            CheckpointError: If a key is missing or holds an invalid value; the
                message names the key.

        .. versionadded:: 0.1
        """
        task = _get(metadata, 'task', str)
        if task not in TASKS:
            _fail('task', task, f'one of {", ".join(TASKS)}')
        classes = _get(metadata, 'classes', list)
        if not classes:
            _fail('classes', classes, 'a non-empty list of {"name", "colour"} objects')
        if task != 'detect' and len(classes) > MAX_RASTER_CLASSES:
            _fail('classes', f'{len(classes)} classes', f'at most {MAX_RASTER_CLASSES}')
        names: list[str] = []
        colours: list[tuple[int, int, int]] = []
        for i, entry in enumerate(classes):
            if not isinstance(entry, Mapping):
                _fail(f'classes[{i}]', entry, 'an object with "name" and "colour"')
            names.append(_get(entry, 'name', str, f'classes[{i}].'))
            colour = entry.get('colour', entry.get('color'))
            if colour is None:
                colour = DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)]
            colours.append(_colour(colour, f'classes[{i}].colour'))
        if len(set(names)) != len(names):
            _fail('classes', names, 'unique class names')

        sensor = _get(metadata, 'sensor', Mapping)
        in_chans = _get(sensor, 'in_chans', int, 'sensor.')
        if in_chans < 1:
            _fail('sensor.in_chans', in_chans, 'a positive integer')
        bands = sensor.get('bands') or [f'band_{i + 1}' for i in range(in_chans)]
        if not all(isinstance(b, str) for b in bands) or len(bands) != in_chans:
            _fail('sensor.bands', bands, f'{in_chans} band names (sensor.in_chans)')
        stats = _get(sensor, 'statistics', Mapping, 'sensor.')
        mean = _floats(stats.get('mean'), in_chans, 'sensor.statistics.mean')
        std = _floats(stats.get('std'), in_chans, 'sensor.statistics.std')
        optional = {
            key: _floats(stats[key], in_chans, f'sensor.statistics.{key}')
            if stats.get(key)
            else ()
            for key in ('p02', 'p50', 'p98')
        }
        statistics = BandStatistics(
            bands=tuple(bands),
            mean=mean,
            std=std,
            pixels=int(stats.get('pixels') or 0),
            **optional,
        )
        nodata = sensor.get('nodata')
        if nodata is not None and not isinstance(nodata, int | float):
            _fail('sensor.nodata', nodata, 'a number or null')
        try:
            sar = SarConversion.from_dict(sensor)
        except ValueError as error:
            _fail('sensor.sar_mode', sensor.get('sar_mode'), str(error))
        res = sensor.get('res')
        if res is not None:
            pair = _floats(
                [res, res] if isinstance(res, int | float) else res, 2, 'sensor.res'
            )
            if min(pair) <= 0:
                _fail('sensor.res', res, 'positive pixel sizes in metres')
            res = pair

        tile = _get(metadata, 'tile', Mapping)
        size = _get(tile, 'size', int, 'tile.')
        overlap = _get(tile, 'overlap', int, 'tile.')
        if size < 1 or not 0 <= overlap < size:
            _fail('tile', dict(tile), 'size >= 1 and 0 <= overlap < size')
        threshold = metadata.get('score_threshold')
        threshold = 0.5 if threshold is None else threshold
        if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            _fail('score_threshold', threshold, 'a number in [0, 1]')
        max_objects = metadata.get('max_objects')
        if max_objects is not None and (
            not isinstance(max_objects, int)
            or isinstance(max_objects, bool)
            or max_objects < 0
        ):
            _fail('max_objects', max_objects, 'null or an integer >= 0')
        model = metadata.get('model')
        patch = model.get('patch_size') if isinstance(model, Mapping) else None
        if patch is not None and (
            not isinstance(patch, int) or isinstance(patch, bool) or patch < 1
        ):
            _fail('model.patch_size', patch, 'null or a positive integer')
        return cls(
            task=task,
            class_names=tuple(names),
            class_colours=tuple(colours),
            bands=tuple(bands),
            in_chans=in_chans,
            statistics=statistics,
            nodata=None if nodata is None else float(nodata),
            sar=sar,
            tile=size,
            overlap=overlap,
            score_threshold=float(threshold),
            sensor=str(sensor.get('name') or ''),
            res=res,
            max_objects=max_objects,
            patch_size=patch,
        )

    def to_metadata(self) -> dict[str, Any]:
        """The JSON form that :meth:`from_metadata` reads.

        Returns:
            a JSON-ready dict.
        """
        return {
            'task': self.task,
            'classes': [
                {'name': name, 'colour': list(colour)}
                for name, colour in zip(
                    self.class_names, self.class_colours, strict=True
                )
            ],
            'sensor': {
                'name': self.sensor,
                'bands': list(self.bands),
                'in_chans': self.in_chans,
                'nodata': self.nodata,
                **(
                    self.sar.to_dict()
                    if self.sar
                    else {'sar_scale': None, 'sar_mode': None}
                ),
                'statistics': self.statistics.to_dict(),
                'res': list(self.res) if self.res else None,
            },
            'tile': {'size': self.tile, 'overlap': self.overlap},
            'score_threshold': self.score_threshold,
            'max_objects': self.max_objects,
            'model': {'patch_size': self.patch_size},
        }


def _fail(key: str, value: object, expected: str) -> NoReturn:
    """Raise the error for metadata *key* holding *value* instead of *expected*."""
    msg = (
        f'model metadata: {key} is {value!r}, expected {expected}; the model file '
        'was written without prediction metadata or by an incompatible dspt-geo'
    )
    raise CheckpointError(msg)


def _get(mapping: Mapping[str, Any], key: str, kind: type, prefix: str = '') -> Any:
    """``mapping[key]`` checked to be a *kind* (bool is not an int)."""
    if not isinstance(mapping, Mapping) or key not in mapping:
        _fail(prefix + key, None, f'a {kind.__name__} (the key is missing)')
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(prefix + key, value, f'a {kind.__name__}')
    return value


def _floats(values: object, count: int, key: str) -> tuple[float, ...]:
    """*values* as *count* finite floats."""
    if (
        not isinstance(values, Sequence)
        or isinstance(values, str)
        or len(values) != count
        or not all(isinstance(v, int | float) and math.isfinite(v) for v in values)
    ):
        _fail(key, values, f'{count} finite numbers')
    return tuple(float(v) for v in values)


def _colour(value: object, key: str) -> tuple[int, int, int]:
    """An RGB triple of integers in 0..255."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 3
        or not all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    ):
        _fail(key, value, 'three integers in 0..255 (r, g, b)')
    r, g, b = value
    return (int(r), int(g), int(b))
