"""The fine-tuned model file: its metadata schema, defined once, and its loader.

``dspt-geo finetune`` ends with ``RUN_DIR/model.safetensors``
(:func:`~dspt_geo.models.save_model_file`): the task model's state dict and, as
JSON metadata, everything needed to use it without the run folder. The writer
(:mod:`dspt_geo.train.finetune_run`) builds a :class:`FinetunedMetadata` and stores
:meth:`FinetunedMetadata.to_metadata`; the readers (:func:`load_finetuned`,
prediction's :class:`PredictionSpec`, evaluation, export) read it back through
:meth:`FinetunedMetadata.from_metadata`, which checks every key and names the one
that is wrong (issue 10)::

    {
      'kind': 'finetuned',
      'schema_version': 1,                 # SCHEMA_VERSION; absent in files of
                                           # dspt-geo 0.1 written before it (= 1)
      'task': 'classify' | 'segment' | 'detect',
      'classes': [{'name': str, 'colour': [r, g, b]}, ...],   # output order
      'sensor': {
        'name': str,
        'bands': [str, ...],          # in the order the model expects
        'in_chans': int,              # == len(bands)
        'nodata': float | null,       # training's nodata value
        'sar_scale': 'complex' | 'intensity' | 'amplitude' | 'db' | null,  # SAR only
        'sar_mode': 'db' | 'amplitude' | 'intensity' | null,  # SAR only
        'statistics': {'mean': [...], 'std': [...], ...},  # one value per band
        'res': float | [x, y] | null  # training pixel size in metres, if known
      },
      'tile': {'size': int, 'overlap': int},
      'score_threshold': float | null, # detection (default 0.5)
      'max_objects': int | null,       # detection: most objects in a training tile
      'model_config': {...},           # the task model's config()
      'class_table': {...},            # ClassTable.to_dict()
      'model': {'name', 'model_args', 'image_size', 'patch_size', 'embed_dim',
                'depth'},
      'training': {...}                # run summary, best metric
    }

:class:`PredictionSpec` is the part prediction needs (``task`` to ``max_objects``
and ``model.patch_size``); it is read from hand-made metadata too (keys not listed
are ignored). ``classes`` are the model's outputs in order: segmentation and
classification logits have one channel per class and the written class raster
holds the class index (0 .. K-1); detection labels follow torchvision (1 .. K, 0 is
background), so label ``k`` is ``classes[k - 1]`` and is written as ``class_id = k -
1``. ``colour`` may be omitted (a fixed palette is used). ``statistics`` is what
:meth:`dspt_geo.data.statistics.BandStatistics.to_dict` writes; only ``mean`` and
``std`` are required. ``sar_mode`` is set when the model was trained on SAR: the
backscatter scale it saw, converted from the stored ``sar_scale`` (absent: complex)
by :class:`dspt_geo.data.sar.SarConversion`. ``res``, when given, lets prediction
resample scenes of a very different resolution to the training one (see
:func:`dspt_geo.predict.run.predict_scene`). ``max_objects``, counted from the
training labels, sizes the detector's work per window
(:func:`dspt_geo.predict.detections.detection_limits`). ``model.patch_size``, when
given, says that the model takes windows of any multiple of it (a ViT with position
embeddings computed for the input size), which lets ``tile='auto'`` use windows
larger than the training tile.

:func:`load_finetuned` rebuilds the model from ``model_config`` and loads its
weights strictly; nothing is unpickled.
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from torch import nn

from ..data.sar import SarConversion
from ..data.statistics import BandStatistics
from ..errors import CheckpointError
from ..task import TASKS, Task
from .model_file import load_model_file
from .tasks import build_task_model_from_config

__all__ = (
    'DEFAULT_PALETTE',
    'FINETUNED_KIND',
    'SCHEMA_VERSION',
    'FinetunedMetadata',
    'PredictionSpec',
    'load_finetuned',
)

#: ``metadata['kind']`` of a fine-tuned model file.
FINETUNED_KIND = 'finetuned'

#: Version of the metadata schema above that this code writes and the newest it
#: reads. Raise it when a key changes meaning or a required key is added, and
#: raise ``_OLDEST_SCHEMA`` when this code no longer reads the older layout.
SCHEMA_VERSION = 1

#: The oldest schema this code reads, and the dspt-geo release that wrote it.
_OLDEST_SCHEMA = (1, '0.1')

#: What the other kinds of model file are, for the error message.
_OTHER_KINDS = {
    'mae-pretrained': (
        'a pre-trained MAE encoder (from dspt-geo pretrain); fine-tune it first: '
        'dspt-geo finetune TASK --init FILE ...'
    )
}

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


@dataclass(frozen=True)
class FinetunedMetadata:
    """The metadata of a fine-tuned model file (schema in the module docstring).

    Attributes:
        spec: what prediction needs: task, classes, sensor, tile, detection sizes.
        model_config: the task model's ``config()``, which rebuilds it.
        model: the encoder's description (``name``, ``model_args``,
            ``image_size``, ``embed_dim``, ``depth``); its ``patch_size`` is
            ``spec.patch_size``.
        class_table: the class table (``ClassTable.to_dict()``), if any.
        training: the run's summary (steps, learning rate, data, best metric).

    .. versionadded:: 0.1
    """

    spec: PredictionSpec
    model_config: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    class_table: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        """The JSON object the model file stores.

        Returns:
            a JSON-ready dict that :meth:`from_metadata` reads back.
        """
        spec = self.spec.to_metadata()
        return {
            'kind': FINETUNED_KIND,
            'schema_version': SCHEMA_VERSION,
            **spec,
            'model_config': self.model_config,
            'class_table': self.class_table,
            'model': {**self.model, **spec['model']},
            'training': self.training,
        }

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any], source: str | os.PathLike[str] = 'model file'
    ) -> 'FinetunedMetadata':
        """Read and check a model file's metadata.

        Args:
            metadata: the model file's JSON object.
            source: the file, named in error messages.

        Returns:
            the metadata.

        Raises:
            CheckpointError: If the file is another kind of model file, its schema
                is older or newer than this dspt-geo reads, or a key is missing or
                holds an invalid value; the message names the key.

        .. versionadded:: 0.1
        """
        kind = metadata.get('kind')
        if kind != FINETUNED_KIND:
            what = _OTHER_KINDS.get(str(kind), f'a model file of kind {kind!r}')
            msg = f'{source} is not a fine-tuned model: it is {what}'
            raise CheckpointError(msg)
        _check_schema_version(metadata.get('schema_version', 1), source)
        try:
            return cls._checked(metadata)
        except CheckpointError as error:
            raise CheckpointError(f'{source}: {error}') from None

    @classmethod
    def _checked(cls, metadata: Mapping[str, Any]) -> 'FinetunedMetadata':
        """The metadata after its kind and version, checked key by key."""
        spec = PredictionSpec.from_metadata(metadata)
        config = _get(metadata, 'model_config', Mapping)
        if config.get('task') != spec.task:
            _fail('model_config.task', config.get('task'), f'{spec.task!r} (task)')
        model = metadata.get('model') or {}
        if not isinstance(model, Mapping):
            _fail('model', model, 'an object describing the encoder')
        table = metadata.get('class_table')
        if table is not None and not isinstance(table, Mapping):
            _fail('class_table', table, 'an object or null')
        training = metadata.get('training') or {}
        if not isinstance(training, Mapping):
            _fail('training', training, 'an object or null')
        return cls(
            spec=spec,
            model_config=dict(config),
            model={k: v for k, v in model.items() if k != 'patch_size'},
            class_table=None if table is None else dict(table),
            training=dict(training),
        )


def load_finetuned(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a fine-tuned model file.

    Args:
        path: a ``model.safetensors`` written by ``dspt-geo finetune``.

    Returns:
        the task model in eval mode, on the CPU, and the file's metadata (checked
        by :meth:`FinetunedMetadata.from_metadata`).

    Raises:
        CheckpointError: If the file is missing or unreadable, is another kind of
            model file (e.g. a pre-trained MAE encoder), its metadata does not
            follow the schema, or its weights do not fit its model configuration.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       The metadata is checked against the versioned schema (issue 10).
    """
    state, metadata = load_model_file(path)
    model = build_task_model_from_config(
        FinetunedMetadata.from_metadata(metadata, path).model_config
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        msg = f'the weights of {path} do not fit its model configuration: {error}'
        raise CheckpointError(msg) from error
    return model.eval(), metadata


def _check_schema_version(version: object, source: str | os.PathLike[str]) -> None:
    """Refuse metadata of a schema this dspt-geo cannot read, saying what to do."""
    oldest, since = _OLDEST_SCHEMA
    if not isinstance(version, int) or isinstance(version, bool):
        _fail('schema_version', version, f'an integer in {oldest}..{SCHEMA_VERSION}')
    if version > SCHEMA_VERSION:
        msg = (
            f'{source} has model file schema {version}; this dspt-geo reads schemas '
            f'{oldest} to {SCHEMA_VERSION}: update dspt-geo to read it'
        )
        raise CheckpointError(msg)
    if version < oldest:
        msg = (
            f'{source} has model file schema {version}, written by an older dspt-geo; '
            f'this dspt-geo reads schemas {oldest} to {SCHEMA_VERSION}: re-train it '
            f'with dspt-geo >= {since} (dspt-geo finetune)'
        )
        raise CheckpointError(msg)


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
