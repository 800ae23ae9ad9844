"""ONNX export: onnxruntime against torch on the same tiles, CPU.

For a classification and a segmentation model (a small ViT with the default heads,
random weights: speed does not depend on them), the exported graph (raw band values
in, probabilities out) runs in onnxruntime and the same computation in torch
(normalise, model, softmax) on the same batches; the best of several rounds of each
is kept, interleaved. Reports tiles/s of both and their ratio, and the largest
difference between the two outputs.

Usage::

    python benchmarks/onnx_export.py [--tile 64] [--batch 16] [--rounds 5]
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from dspt_geo.export import RawInputModel, export_onnx
from dspt_geo.models import load_finetuned
from dspt_geo.models.encoder import EncoderSpec, SensorEncoder
from dspt_geo.models.model_file import save_model_file
from dspt_geo.models.tasks import build_task_model
from dspt_geo.predict.spec import PredictionSpec

BANDS = ('red', 'green', 'blue')


def model_file(folder: Path, task: str, tile: int, depth: int, width: int) -> Path:
    """A fine-tuned model file with random weights (the layout finetune writes)."""
    spec = EncoderSpec.from_dict(
        {
            'model': 'vit_tiny_patch16_224', 'in_chans': 3, 'image_size': tile,
            'patch_size': 8, 'drop_path_rate': 0.0, 'sensor': 'rgb', 'bands': list(BANDS),
            'model_args': {'depth': depth, 'embed_dim': width, 'num_heads': 3},
        }
    )  # fmt: skip
    model = build_task_model(task, SensorEncoder.from_spec(spec), 4)
    prediction = PredictionSpec.from_metadata(
        {
            'task': task,
            'classes': [{'name': f'class{i}'} for i in range(4)],
            'sensor': {
                'name': 'rgb', 'bands': list(BANDS), 'in_chans': 3, 'nodata': 0,
                'statistics': {'mean': [90.0, 100.0, 80.0], 'std': [40.0, 35.0, 30.0]},
                'res': [0.5, 0.5],
            },
            'tile': {'size': tile, 'overlap': tile // 4},
        }
    )  # fmt: skip
    metadata = {
        **prediction.to_metadata(),
        'kind': 'finetuned',
        'model_config': model.config(),
    }
    path = folder / f'{task}.safetensors'
    save_model_file(path, model.state_dict(), metadata)
    return path


def best_rate(
    run: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray], rounds: int
) -> float:
    """Tiles per second of the best round."""
    best = float('inf')
    for _ in range(rounds):
        started = time.perf_counter()
        for batch in batches:
            run(batch)
        best = min(best, time.perf_counter() - started)
    return sum(len(b) for b in batches) / best


def main() -> None:
    """Measure and print one row per task."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tile', type=int, default=64)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--batches', type=int, default=8)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--depth', type=int, default=6)
    parser.add_argument('--width', type=int, default=192)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batches = [
        rng.integers(1, 255, (args.batch, 3, args.tile, args.tile)).astype(np.float32)
        for _ in range(args.batches)
    ]
    print(
        f'torch {torch.__version__} ({torch.get_num_threads()} threads), '
        f'onnxruntime {onnxruntime.__version__}; tile {args.tile}, batch {args.batch}, '
        f'ViT depth {args.depth} width {args.width} patch 8'
    )
    print('task      torch tiles/s  onnxruntime tiles/s  ratio  max |diff|')
    with tempfile.TemporaryDirectory() as tmp:
        for task in ('classify', 'segment'):
            path = model_file(Path(tmp), task, args.tile, args.depth, args.width)
            onnx_path = export_onnx(path, Path(tmp) / f'{task}.onnx')
            model, metadata = load_finetuned(path)
            wrapped = RawInputModel(
                model, PredictionSpec.from_metadata(metadata)
            ).eval()
            session = onnxruntime.InferenceSession(
                str(onnx_path), providers=['CPUExecutionProvider']
            )

            def run_torch(
                batch: np.ndarray, wrapped: torch.nn.Module = wrapped
            ) -> np.ndarray:
                with torch.inference_mode():
                    return wrapped(torch.from_numpy(batch)).numpy()

            def run_onnx(
                batch: np.ndarray, session: onnxruntime.InferenceSession = session
            ) -> np.ndarray:
                return session.run(None, {'images': batch})[0]

            diff = float(np.abs(run_torch(batches[0]) - run_onnx(batches[0])).max())
            rates = {'torch': 0.0, 'onnx': 0.0}
            for _ in range(2):  # interleaved
                rates['torch'] = max(
                    rates['torch'], best_rate(run_torch, batches, args.rounds)
                )
                rates['onnx'] = max(
                    rates['onnx'], best_rate(run_onnx, batches, args.rounds)
                )
            print(
                f'{task:9s} {rates["torch"]:13.1f}  {rates["onnx"]:19.1f}  '
                f'{rates["onnx"] / rates["torch"]:5.2f}x  {diff:.1e}'
            )


if __name__ == '__main__':
    main()
