"""Prediction over many scenes: output names, sharing scenes across processes.

One scene goes to one file (``--out`` a file name, or a default name beside the
scene); several scenes, or a folder, go to an output folder, one result per scene.
Under ``torchrun`` (or with ``devices`` > 1, which starts one process per device)
the scenes are dealt out round robin, and every process writes its own outputs.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.multiprocessing as mp

from ..data.discovery import RASTER_EXTENSIONS
from ..errors import CheckpointError, ConfigError, NoRastersFoundError
from ..models.finetuned import FinetunedMetadata, load_finetuned
from ..models.model_file import read_metadata
from ..outputs import check_output_path
from .qgis import write_qgis_project
from .run import PredictionResult, predict_scene
from .spec import PredictionSpec

__all__ = ('PredictOptions', 'find_scenes', 'output_path', 'predict_scenes')

logger = logging.getLogger(__name__)

#: Default output suffix per task, appended to the scene's stem.
_SUFFIXES = {
    'segment': '_mask.tif',
    'classify': '_classes.tif',
    'detect': '_detections.gpkg',
}

#: Extensions that name an output file rather than a folder.
_OUTPUT_EXTENSIONS = ('.tif', '.tiff', '.gpkg', '.geojson', '.fgb')


@dataclass(frozen=True)
class PredictOptions:
    """Settings of :func:`predict_scene` shared by every scene (see there)."""

    batch_size: int | None = None
    tile: int | Literal['auto'] | None = None
    overlap: int | None = None
    probabilities: bool = False
    score_threshold: float | None = None
    overwrite: bool = False
    progress: bool = True
    max_objects: int | None = None


def find_scenes(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Scenes named by *paths*: files as given, folders searched for rasters.

    Raises:
        NoRastersFoundError: If a path is missing or a folder holds no raster.
    """
    scenes: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            scenes.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob('*')
                if p.is_file() and p.suffix.lower() in RASTER_EXTENSIONS
                and not p.name.startswith('.')
            )  # fmt: skip
            if not found:
                msg = f'no raster found in {path}'
                raise NoRastersFoundError(msg)
            scenes.extend(found)
        else:
            msg = f'no such scene: {path}'
            raise NoRastersFoundError(msg)
    return scenes


def output_path(
    scene: Path, task: str, out: str | os.PathLike[str] | None, *, many: bool
) -> Path:
    """Where the result of *scene* goes.

    Args:
        scene: the input scene.
        task: the model's task.
        out: ``--out``: a file (one scene), a folder, or None (beside the scene).
        many: whether several scenes are predicted.

    Raises:
        ConfigError: If *out* names a file while there are several scenes.
    """
    name = scene.stem + _SUFFIXES[task]
    if out is None:
        return scene.with_name(name)
    out = Path(out)
    if out.suffix.lower() in _OUTPUT_EXTENSIONS:
        if many:
            msg = f'--out {out} is a file name, but there are several scenes: give a folder'
            raise ConfigError(msg)
        return out
    return out / name


def predict_scenes(
    scenes: Sequence[str | os.PathLike[str]],
    model_file: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    options: PredictOptions = PredictOptions(),
    device: str | None = None,
    devices: int = 1,
    qgis_project: str | os.PathLike[str] | None = None,
) -> list[PredictionResult]:
    """Predict every scene with a fine-tuned model file.

    Args:
        scenes: scene files and folders of scenes.
        model_file: ``model.safetensors`` from ``dspt-geo finetune``.
        out: output file (one scene), folder, or None for names beside the scenes.
        options: prediction settings.
        device: torch device (default: CUDA when available, else the CPU).
        devices: processes to share the scenes (one per GPU; on the CPU, processes
            of one thread each). Under ``torchrun`` the launcher's processes are used.
        qgis_project: also write a ``.qgz`` project with the scene and its outputs
            (one scene only).

    Returns:
        the results of the scenes this process predicted (all of them with one
        process).

    Raises:
        ConfigError: If the options contradict each other.
        OutputPathError: If an output cannot be written (checked before the
            first scene is read; nothing is created).
        NoRastersFoundError: If a scene is missing.
        CheckpointError: If the model file is not a fine-tuned dspt-geo model.
    """
    found = find_scenes(scenes)
    if qgis_project is not None:
        if len(found) != 1:
            msg = '--qgis-project writes a project for one scene; predict one scene'
            raise ConfigError(msg)
        check_output_path(qgis_project, '--qgis-project')
    rank, world = (
        int(os.environ.get('RANK', '0')),
        int(os.environ.get('WORLD_SIZE', '1')),
    )
    spawn = world == 1 and devices > 1
    # A process that only deals out scenes reads the metadata, not the weights.
    model, spec = (None, _read_spec(model_file)) if spawn else _load(model_file)
    targets = [(s, output_path(s, spec.task, out, many=len(found) > 1)) for s in found]
    for _, target in targets:
        check_output_path(target, 'output' if out is None else '--out')
    if model is None:
        mp.spawn(
            _predict_share,
            args=(devices, targets, model_file, options, device),
            nprocs=devices,
            join=True,
        )
        return []
    results = _predict(targets[rank::world], model, spec, options, device)
    if qgis_project is not None and results:
        write_qgis_project(qgis_project, found[0], list(results[0].layers))
        logger.info('wrote %s', qgis_project)
    return results


def _predict(
    targets: Sequence[tuple[Path, Path]],
    model: torch.nn.Module,
    spec: PredictionSpec,
    options: PredictOptions,
    device: str | None,
) -> list[PredictionResult]:
    """Predict scene after scene, logging what was written."""
    results = []
    for scene, target in targets:
        result = predict_scene(
            scene,
            model,
            spec,
            target,
            device=device,
            batch_size=options.batch_size,
            tile=options.tile,
            overlap=options.overlap,
            probabilities=options.probabilities,
            overwrite=options.overwrite,
            progress=options.progress,
            score_threshold=options.score_threshold,
            max_objects=options.max_objects,
        )
        logger.info('%s -> %s (%.1f s)', scene, result.output, result.seconds)
        results.append(result)
    return results


def _predict_share(
    index: int,
    devices: int,
    targets: Sequence[tuple[Path, Path]],
    model_file: str | os.PathLike[str],
    options: PredictOptions,
    device: str | None,
) -> None:
    """One spawned process: its share of the scenes, on its own device."""
    if torch.cuda.is_available():
        device = f'cuda:{index % torch.cuda.device_count()}'
    else:
        torch.set_num_threads(1)
    _predict(targets[index::devices], *_load(model_file), options, device)


def _load(model_file: str | os.PathLike[str]) -> tuple[torch.nn.Module, PredictionSpec]:
    """The model of a fine-tuned model file and its prediction spec."""
    model, metadata = load_finetuned(model_file)
    return model, PredictionSpec.from_metadata(metadata)


def _read_spec(model_file: str | os.PathLike[str]) -> PredictionSpec:
    """The prediction spec of a fine-tuned model file, without loading its weights.

    Raises:
        CheckpointError: If the file is not a fine-tuned dspt-geo model file.
    """
    metadata = read_metadata(model_file)
    if metadata is None:
        msg = f'{model_file} is not a dspt-geo model file'
        raise CheckpointError(msg)
    return FinetunedMetadata.from_metadata(metadata, model_file).spec
