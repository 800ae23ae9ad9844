"""What a dspt-geo model file holds, as data and as text (for ``dspt-geo info``)."""

import os
from pathlib import Path
from typing import Any

from ..data.sar import SarConversion
from .model_file import load_model_file

__all__ = ('describe_model_file', 'format_model_description')


def describe_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe a model file: its metadata plus parameter count and size.

    Args:
        path: a ``.safetensors`` file written by dspt-geo.

    Returns:
        the metadata with ``path``, ``parameters`` and ``bytes`` added.

    Raises:
        CheckpointError: If the file is not a readable dspt-geo model file.
    """
    tensors, metadata = load_model_file(path)
    return {
        'path': str(Path(path).resolve()),
        'bytes': Path(path).stat().st_size,
        'parameters': sum(t.numel() for t in tensors.values()),
        **metadata,
    }


def format_model_description(description: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe_model_file`'s result."""
    lines = [
        f'{description["path"]}',
        f'  kind        {description.get("kind", "?")} (format {description["format_version"]})',
        (
            f'  parameters  {description["parameters"] / 1e6:.2f} M, '
            f'{description["bytes"] / 2**20:.1f} MiB'
        ),
    ]
    model = description.get('model', {})
    if model:
        lines.append(
            f'  encoder     {model.get("name")} {model.get("model_args") or ""}'.rstrip()
            + f', patch {model.get("patch_size")}, width {model.get("embed_dim")}, '
            f'depth {model.get("depth")}, image {model.get("image_size")} px'
        )
    task = description.get('task')
    if task:
        names = [str(c.get('name')) for c in description.get('classes') or []]
        tile = description.get('tile') or {}
        lines.append(
            f'  task        {task}, {len(names)} classes: {", ".join(names)}; tiles '
            f'{tile.get("size")} px, overlap {tile.get("overlap")}'
        )
    sensors = dict(description.get('sensors') or {})
    sensor = description.get('sensor')  # a fine-tuned model has one
    if isinstance(sensor, dict):
        sensors[str(sensor.get('name') or 'image')] = sensor
    for name, sensor in sensors.items():
        lines.append(f'  sensor      {name}: {", ".join(sensor.get("bands") or [])}')
        conversion = SarConversion.from_dict(sensor)
        if conversion is not None:
            lines.append(f'              SAR {conversion}')
        stats = sensor.get('statistics')
        if stats:
            means = ', '.join(f'{m:.4g}' for m in stats['mean'])
            lines.append(f'              mean {means}')
    training = description.get('training', {})
    if training:
        loss = training.get('final_loss')
        lines.append(
            f'  training    {training.get("steps")} steps, final loss '
            f'{float("nan") if loss is None else loss:.4g}, lr {training.get("lr"):.3g}, '
            f'init {training.get("init")}, {training.get("seconds")} s'
        )
        best = training.get('best')
        if isinstance(best, dict):
            lines.append(
                f'  best        {training.get("metric")} {best.get("value"):.4g} at '
                f'step {best.get("step")}'
            )
    return '\n'.join(lines)
