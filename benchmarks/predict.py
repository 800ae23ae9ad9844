"""Whole-scene prediction with dspt-geo's own fine-tuned models, and TerraTorch's.

Models (made in the run, in ``--work``): ``detect`` and ``segment`` are fine-tuned
with ``dspt-geo finetune`` for ``--steps`` steps on the SpaceNet building sample
(``../shared/data/labelled/buildings``: one 900 x 900 px panchromatic scene and 43
footprints); ``classify`` is built from the same kind of config with random
weights (throughput does not depend on the weights). The encoder is
``--model`` (default a tiny ViT of 4 blocks) at the sample's 64 px training tile;
the heads keep ``dspt-geo finetune``'s defaults but for their width (64 channels:
UperNet's, and the detector's pyramid, RPN and 4-conv box head).

(a) Throughput on the sample scene, per task (segmentation also on the sample
tiled to ``--steady-size`` px, where fixed costs weigh less): the bare model
forward over the same windows (same count, size and batch: ``--batch``, else predict's
default for the window size; the windows read and normalised beforehand) against
``predict_scene`` (read, normalise, model, blend, write), in megapixels of windows
per second and as a ratio (target >= 0.9x), and the scene's megapixels per
second. Rows: the default windows, and ``tile='auto'``. Detection also runs with
the model's own proposal and detection limits (``max_objects`` large: what
predict did before issue 16), and reports the scene's box mAP of every run against
the sample's footprints (all detections of the scene count, not COCO's 100 per
image). Rounds interleave bare and predict runs and keep each
one's best (the machine is shared). Every process keeps freed memory as
``dspt-geo predict`` does (:func:`dspt_geo.allocator.keep_freed_memory`).

(b) Scenes of ``--sizes`` px (the sample tiled, 1-band uint16), one subprocess per
run, peak resident memory (``VmHWM``) and time: ``predict_scene`` with
``--rss-tile`` windows, and TerraTorch's ``tiled_inference`` on the same model
and windows (the whole scene read into memory, as its in-memory API takes it;
then argmax and a GeoTIFF). A segmentation model of ``--rss-model-args`` (a
narrower ViT and head than in (a), so that 16k px finish in minutes on a CPU).

TerraTorch is optional: install it into a separate venv chained to this one (its
pins clash with ours), see BENCHMARKS.md; pass its interpreter as
``--terratorch-python``. Without it the TerraTorch rows are skipped with a note.
TerraTorch's package ``__init__`` imports its whole model zoo; the child loads
``terratorch.tasks.tiled_inference`` (unmodified, from the installed wheel) with
only the ``terratorch`` and ``terratorch.tasks`` package ``__init__`` files
bypassed.

Usage::

    python benchmarks/predict.py --data ../shared/data [--steps 20] \\
        [--sizes 2048 8192 16384] [--terratorch-python .tt-venv/bin/python]
"""

import argparse
import importlib
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from dspt_geo.allocator import keep_freed_memory
from dspt_geo.data.transforms import normalise
from dspt_geo.models import build_encoder, build_task_model, load_finetuned
from dspt_geo.predict import PredictionSpec, SceneReader, TileGrid, predict_scene
from dspt_geo.predict.autotile import sized_to_window
from dspt_geo.predict.run import default_batch_size
from dspt_geo.predict.tiling import cell_tiles

SPACENET = Path('labelled/buildings')
SCENE, LABELS = 'spacenet_pan.tif', 'spacenet_buildings.geojson'
TILE = 64


def rss_mb(key: str) -> float:
    """A ``/proc/self/status`` memory figure in MB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024
    return math.nan


# -- models -------------------------------------------------------------------


def repeat(option: str, values: list[str]) -> list[str]:
    """``option value`` for every value."""
    return [item for value in values for item in (option, value)]


def finetune(task: str, data: Path, out: Path, args: argparse.Namespace) -> Path:
    """``dspt-geo finetune TASK`` on the sample, in this process; the model file."""
    from dspt_geo_cli.main import cli

    model = out / task / 'model.safetensors'
    if model.exists():
        return model
    folder = data / SPACENET
    command = [
        '-q', 'finetune', task, '--images', str(folder / SCENE),
        '--labels', str(folder / LABELS), '--out', str(out / task),
        '--model', args.model, *repeat('--model-arg', args.model_arg),
        '--image-size', str(TILE), '--steps', str(args.steps), '--batch-size', '8',
        '--lr', '1e-3', '--num-workers', '0', '--accelerator', 'cpu',
        '--val-every', str(args.steps), '--split', 'none', '--overwrite',
        *repeat('--head-arg', args.head_arg.get(task, [])),
    ]  # fmt: skip
    cli.main(command, standalone_mode=False)
    return model


def classify_model(segment_file: Path) -> tuple[nn.Module, PredictionSpec]:
    """A classifier on the segmentation model's encoder config (random weights)."""
    _, metadata = load_finetuned(segment_file)
    encoder = metadata['model_config']['encoder']
    vit, _ = build_encoder(
        encoder['model'], encoder['in_chans'], image_size=encoder['image_size'],
        patch_size=encoder['patch_size'], model_args=encoder['model_args'],
    )  # fmt: skip
    model = build_task_model('classify', vit, len(metadata['classes']))
    spec = PredictionSpec.from_metadata({**metadata, 'task': 'classify'})
    return model.eval(), spec


# -- (a) throughput -------------------------------------------------------------


def scene_windows(scene: Path, spec: PredictionSpec, size: int) -> torch.Tensor:
    """Every window predict runs over *scene*, read and normalised as it does."""
    with SceneReader(scene, spec) as reader:
        tiles = (
            cell_tiles(reader.height, reader.width, size)
            if spec.task == 'classify'
            else list(TileGrid(reader.height, reader.width, size, spec.overlap))
        )
        windows = [reader.read(tile, size) for tile in tiles]
    images = torch.from_numpy(np.stack([image for image, _ in windows]))
    valid = torch.from_numpy(np.stack([mask for _, mask in windows]))
    return normalise(images, valid, spec.statistics)


def bare_seconds(
    model: nn.Module,
    spec: PredictionSpec,
    images: torch.Tensor,
    batch: int,
    max_objects: int | None,
) -> float:
    """The model alone over *images*, limited as predict limits it."""
    start = time.perf_counter()
    size = images.shape[-1]
    with torch.inference_mode(), sized_to_window(model, spec, size, max_objects):
        for first in range(0, len(images), batch):
            model(images[first : first + batch])
    return time.perf_counter() - start


def pixel_boxes(frame: gpd.GeoDataFrame, transform: Any) -> torch.Tensor:
    """Boxes of a frame's geometries in scene pixels (x1, y1, x2, y2)."""
    bounds = frame.geometry.bounds.to_numpy().reshape(-1, 4)
    inverse = ~transform
    x1, y1 = inverse * (bounds[:, 0], bounds[:, 3])
    x2, y2 = inverse * (bounds[:, 2], bounds[:, 1])
    return torch.tensor(np.stack([x1, y1, x2, y2], axis=1), dtype=torch.float32)


def scene_map(detections: Path, labels: Path, scene: Path) -> dict[str, float]:
    """Box mAP (COCO, and at IoU 0.5) of a detection file against the footprints."""
    with rasterio.open(scene) as src:
        transform, crs = src.transform, src.crs
    truth = gpd.read_file(labels).to_crs(crs)
    found = gpd.read_file(detections, layer='detections')
    # Every detection of the scene counts (COCO's default keeps 100 per image,
    # which on a whole scene drops most of them).
    metric = MeanAveragePrecision(
        box_format='xyxy', iou_type='bbox', max_detection_thresholds=[1, 100, 10**5]
    )
    metric.update(
        [
            {
                'boxes': pixel_boxes(found, transform),
                'scores': torch.tensor(found.score.to_numpy(), dtype=torch.float32),
                'labels': torch.zeros(len(found), dtype=torch.int64),
            }
        ],
        [
            {
                'boxes': pixel_boxes(truth, transform),
                'labels': torch.zeros(len(truth), dtype=torch.int64),
            }
        ],
    )
    result = metric.compute()
    return {'map': float(result['map']), 'map_50': float(result['map_50'])}


def throughput(
    task: str,
    model: nn.Module,
    spec: PredictionSpec,
    scene: Path,
    labels: Path,
    folder: Path,
    args: argparse.Namespace,
    scene_name: str = '',
) -> list[dict[str, Any]]:
    """Rows of table (a) for one task; *scene_name*: a scene other than the sample."""
    with rasterio.open(scene) as src:
        height, width = src.height, src.width
    runs: list[tuple[str, dict[str, Any]]] = [(f'default windows{scene_name}', {})]
    if task == 'detect' and not scene_name:
        runs.insert(0, ('model limits (before)', {'max_objects': 10**6}))
    if task != 'classify' and not scene_name:
        runs.append(('tile auto', {'tile': 'auto'}))
    rows = []
    suffix = '.gpkg' if task == 'detect' else '.tif'
    for name, options in runs:
        out = folder / f'{task}-{len(rows)}{suffix}'
        best_full, best_bare, result = math.inf, math.inf, None
        # predict / bare of each repeat (the bare forward right after predict, so
        # the machine's drift between repeats cancels); the table gives the median.
        ratios = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = predict_scene(
                scene, model, spec, out, batch_size=args.batch, progress=False,
                overwrite=True, device='cpu', score_threshold=args.score_threshold,
                **options,
            )  # fmt: skip
            full = time.perf_counter() - start
            best_full = min(best_full, full)
            images = scene_windows(scene, spec, result.tile)
            seconds = bare_seconds(
                model, spec, images, result.batch_size, options.get('max_objects')
            )
            best_bare = min(best_bare, seconds)
            ratios.append(seconds / full)
        assert result is not None
        windows = len(images)
        window_mpx = windows * result.tile**2 / 1e6
        row = {
            'task': task,
            'run': name,
            'tile': result.tile,
            'batch': result.batch_size,
            'windows': windows,
            'bare': window_mpx / best_bare,
            'full': window_mpx / best_full,
            'scene': height * width / 1e6 / best_full,
            'seconds': best_full,
            'ratios': ratios,
        }
        if task == 'detect':
            row.update(scene_map(out, labels, scene), detections=result.detections)
        if task == 'segment' and not scene_name:
            with rasterio.open(out) as src:
                row['classes'] = src.read(1)
        rows.append(row)
    if task == 'segment' and not scene_name:
        first = rows[0].pop('classes')
        for row in rows:
            row['agree'] = float((row.pop('classes', first) == first).mean())
    return rows


# -- (b) memory -------------------------------------------------------------------


def write_scene(path: Path, size: int, sample: Path) -> None:
    """A *size* x *size* scene of the sample tiled, 1-band uint16, tiled and compressed."""
    with rasterio.open(sample) as src:
        tile = src.read(1)
        profile = {
            'driver': 'GTiff', 'width': size, 'height': size, 'count': 1,
            'dtype': 'uint16', 'crs': src.crs, 'transform': src.transform,
            'tiled': True, 'blockxsize': 512, 'blockysize': 512, 'compress': 'zstd',
            'zstd_level': 1, 'nodata': 0, 'bigtiff': 'if_safer',
        }  # fmt: skip
    reps = -(-size // tile.shape[1])
    row_band = np.tile(tile, (1, reps))[:, :size]
    row_band[row_band == 0] = 1  # no nodata holes: every window runs
    with rasterio.open(path, 'w', **profile) as dst:
        for row in range(0, size, 512):
            rows = (np.arange(row, min(row + 512, size)) % tile.shape[0])[:, None]
            dst.write(
                row_band[rows[:, 0]][None], window=Window(0, row, size, len(rows))
            )


def rss_model(args: argparse.Namespace, template: Path) -> Path:
    """The narrow segmentation model of table (b), saved as a model file."""
    from dspt_geo.models import save_model_file

    path = Path(args.work) / 'rss' / 'model.safetensors'
    if path.exists():
        return path
    _, metadata = load_finetuned(template)
    encoder = metadata['model_config']['encoder']
    kwargs = dict(a.split('=') for a in args.rss_model_args)
    torch.manual_seed(0)
    vit, _ = build_encoder(
        encoder['model'], encoder['in_chans'], image_size=encoder['image_size'],
        patch_size=encoder['patch_size'],
        model_args={'depth': int(kwargs.get('depth', 2)),
                    'embed_dim': int(kwargs.get('embed_dim', 32)),
                    'num_heads': int(kwargs.get('num_heads', 2))},
    )  # fmt: skip
    model = build_task_model(
        'segment',
        vit,
        len(metadata['classes']),
        channels=int(kwargs.get('channels', 32)),
    )
    metadata = {**metadata, 'model_config': model.config()}
    metadata['tile'] = {'size': args.rss_tile, 'overlap': args.rss_overlap}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model_file(path, model.state_dict(), metadata)
    return path


def child_predict(args: argparse.Namespace) -> dict[str, Any]:
    """One predict_scene run (a subprocess of table (b))."""
    model, metadata = load_finetuned(args.model_file)
    spec = PredictionSpec.from_metadata(metadata)
    before = rss_mb('VmRSS')
    start = time.perf_counter()
    predict_scene(
        args.scene, model, spec, args.out, batch_size=args.batch, progress=False,
        overwrite=True, device='cpu',
    )  # fmt: skip
    return {
        'before': before,
        'peak': rss_mb('VmHWM'),
        'seconds': time.perf_counter() - start,
    }


def load_tiled_inference() -> Any:
    """TerraTorch's ``tiled_inference`` without its package ``__init__`` files."""
    found = importlib.util.find_spec('terratorch')
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError('terratorch')
    root = Path(next(iter(found.submodule_search_locations)))
    for name, folder in (('terratorch', root), ('terratorch.tasks', root / 'tasks')):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module('terratorch.tasks.tiled_inference').tiled_inference


def child_terratorch(args: argparse.Namespace) -> dict[str, Any]:
    """TerraTorch's tiled_inference on the same model and windows (a subprocess)."""
    tiled_inference = load_tiled_inference()
    model, metadata = load_finetuned(args.model_file)
    spec = PredictionSpec.from_metadata(metadata)
    before = rss_mb('VmRSS')
    start = time.perf_counter()
    with rasterio.open(args.scene) as src:
        profile = src.profile
        image = torch.from_numpy(src.read().astype(np.float32))[None]
    valid = (image != 0).any(dim=1)
    image = normalise(image, valid, spec.statistics)
    with torch.inference_mode():
        logits = tiled_inference(
            model, image, out_channels=spec.num_classes, crop=spec.tile,
            stride=spec.tile - spec.overlap, delta=spec.overlap // 4,
            batch_size=args.batch, padding=False, device='cpu',
        )  # fmt: skip
    classes = logits[0].argmax(dim=0).to(torch.uint8).numpy()
    profile.update(dtype='uint8', nodata=255, compress='deflate')
    with rasterio.open(args.out, 'w', **profile) as dst:
        dst.write(classes, 1)
    return {
        'before': before,
        'peak': rss_mb('VmHWM'),
        'seconds': time.perf_counter() - start,
    }


def rss_batch(args: argparse.Namespace) -> int:
    """The batch size of table (b)'s runs."""
    return args.batch or default_batch_size(args.rss_tile, torch.device('cpu'))


def memory_rows(
    args: argparse.Namespace, folder: Path, model_file: Path, sample: Path
) -> list[dict[str, Any]]:
    """Rows of table (b): one subprocess per scene size and runner."""
    rows = []
    runners = ['predict'] + (['terratorch'] if args.terratorch_python else [])
    # One batch size for both runners: predict's default unless --batch.
    batch = rss_batch(args)
    for size in args.sizes:
        scene = folder / f'scene-{size}.tif'
        write_scene(scene, size, sample)
        for runner in runners:
            if runner == 'terratorch' and size > args.terratorch_max:
                rows.append({'size': size, 'runner': runner, 'skipped': True})
                continue
            python = (
                args.terratorch_python if runner == 'terratorch' else sys.executable
            )
            out = folder / f'out-{size}-{runner}.tif'
            command = [
                python, __file__, '--child', runner, '--scene', str(scene),
                '--out', str(out), '--model-file', str(model_file),
                '--batch', str(batch), '--threads', str(args.threads),
            ]  # fmt: skip
            # The TerraTorch venv reads dspt-geo from this checkout.
            env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, env=env
            )
            if done.returncode:
                sys.stderr.write(done.stderr[-3000:])
                rows.append({'size': size, 'runner': runner, 'failed': True})
                continue
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({'size': size, 'runner': runner, **figures})
            out.unlink(missing_ok=True)
        scene.unlink()
    return rows


# -- main ---------------------------------------------------------------------------


def print_tables(
    args: argparse.Namespace, throughput_rows: list[dict[str, Any]], memory: list
) -> None:
    """Markdown tables of (a) and (b)."""
    setting = (
        f'{args.model} {" ".join(args.model_arg)}, {TILE} px training tile, '
        f'batch {args.batch or "per window size"}, cpu, {args.threads} torch thread(s), '
        f'{args.steps} fine-tuning steps'
    )
    print(f'\n(a) Throughput on the SpaceNet sample (900 x 900 px), {setting}; '
          f'speeds: best of {args.repeats}; predict / bare: the median of the '
          f'repeats\' own ratios (each repeat\'s listed below)\n')  # fmt: skip
    print('| task | run | window px | batch | windows | bare forward (window Mpx/s) | '
          'predict (window Mpx/s) | predict / bare | scene Mpx/s | seconds | '
          'mAP / mAP50 or agreement |')  # fmt: skip
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|')
    for r in throughput_rows:
        extra = ''
        if 'map' in r:
            extra = f'{r["map"]:.3f} / {r["map_50"]:.3f} ({r["detections"]} boxes)'
        elif 'agree' in r:
            extra = f'{100 * r["agree"]:.2f} % of pixels as default'
        print(
            f'| {r["task"]} | {r["run"]} | {r["tile"]} | {r["batch"]} | {r["windows"]} | '
            f'{r["bare"]:.3f} | {r["full"]:.3f} | {statistics.median(r["ratios"]):.2f}x | '
            f'{r["scene"]:.3f} | {r["seconds"]:.1f} | {extra} |'
        )
    print('\npredict / bare of each repeat:')
    for r in throughput_rows:
        print(
            f'- {r["task"]}, {r["run"]}: ' + ', '.join(f'{x:.2f}' for x in r['ratios'])
        )
    if not memory:
        return
    print(f'\n(b) Peak memory and time, one process per run, segmentation model '
          f'{" ".join(args.rss_model_args)}, {args.rss_tile} px windows, overlap '
          f'{args.rss_overlap}, batch {rss_batch(args)}, {args.threads} thread(s)\n')  # fmt: skip
    print('| scene | runner | RSS before (MB) | peak RSS (MB) | peak - before (MB) | '
          'seconds | scene Mpx/s |')  # fmt: skip
    print('|---|---|---:|---:|---:|---:|---:|')
    for r in memory:
        name = (
            'dspt-geo predict_scene'
            if r['runner'] == 'predict'
            else ('TerraTorch tiled_inference')
        )
        if r.get('skipped') or r.get('failed'):
            why = 'skipped (--terratorch-max)' if r.get('skipped') else 'failed'
            print(f'| {r["size"]}^2 | {name} | {why} | | | | |')
            continue
        print(
            f'| {r["size"]}^2 | {name} | {r["before"]:.0f} | {r["peak"]:.0f} | '
            f'{r["peak"] - r["before"]:.0f} | {r["seconds"]:.1f} | '
            f'{r["size"] ** 2 / 1e6 / r["seconds"]:.2f} |'
        )
    if not args.terratorch_python:
        print(
            '\nTerraTorch rows skipped: no --terratorch-python given (see BENCHMARKS.md).'
        )


def main() -> None:
    """Run the benchmark and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--data',
        type=Path,
        default=Path(__file__).resolve().parents[2] / 'shared' / 'data',
    )
    parser.add_argument(
        '--work', default=None, help='folder for models (kept) and scenes'
    )
    parser.add_argument('--model', default='vit_tiny_patch16_224')
    parser.add_argument('--model-arg', action='append', default=None)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--tasks', nargs='+', default=['classify', 'segment', 'detect'])
    parser.add_argument('--score-threshold', type=float, default=None)
    parser.add_argument('--sizes', type=int, nargs='*', default=[2048, 8192, 16384])
    parser.add_argument(
        '--steady-size',
        type=int,
        default=2048,
        help='segment: also measure (a) on the sample tiled to this size (0: not)',
    )
    parser.add_argument('--rss-tile', type=int, default=512)
    parser.add_argument('--rss-overlap', type=int, default=64)
    parser.add_argument(
        '--rss-model-args',
        nargs='+',
        default=['depth=1', 'embed_dim=32', 'num_heads=2', 'channels=16'],
    )
    parser.add_argument('--terratorch-python', default=None)
    parser.add_argument(
        '--terratorch-max',
        type=int,
        default=16384,
        help='largest scene for TerraTorch (it holds the scene in memory)',
    )
    parser.add_argument(
        '--batch',
        type=int,
        default=None,
        help="windows per model call (default: predict's for the window size)",
    )
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument(
        '--child', choices=['predict', 'terratorch'], help=argparse.SUPPRESS
    )
    parser.add_argument('--scene', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    parser.add_argument('--model-file', help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The malloc thresholds of `dspt-geo predict`, for predict, bare forward and
    # TerraTorch alike.
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    if args.child:
        run = child_predict if args.child == 'predict' else child_terratorch
        print(json.dumps(run(args)))
        return
    args.model_arg = args.model_arg if args.model_arg is not None else ['depth=4']
    args.head_arg = {
        # Heads narrowed to the tiny encoder (the defaults suit ViT-B); few sampled
        # RoIs make training steps fast (inference keeps the model's limits).
        'segment': ['channels=64'],
        'detect': ['out_channels=64', 'detector_args={box_batch_size_per_image: 64}'],
    }
    if args.terratorch_python:
        probe = subprocess.run(
            [args.terratorch_python, '-c',
             'import importlib.util as u; assert u.find_spec("terratorch")'],
            capture_output=True, check=False,
        )  # fmt: skip
        if probe.returncode:
            print(
                f'note: no terratorch in {args.terratorch_python}; TerraTorch rows skipped'
            )
            args.terratorch_python = None
    sample = args.data / SPACENET / SCENE
    if not sample.exists():
        sys.exit(f'the SpaceNet sample is not in {args.data}; pass --data')
    work = Path(args.work or tempfile.mkdtemp(prefix='dspt-predict-bench-'))
    args.work = str(work)
    models = {
        task: finetune(task, args.data, work / 'models', args)
        for task in ('segment', 'detect')
        if task in args.tasks or (task == 'segment' and 'classify' in args.tasks)
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        folder = Path(tmp)
        for task in args.tasks:
            if task == 'classify':
                model, spec = classify_model(models['segment'])
            else:
                model, metadata = load_finetuned(models[task])
                spec = PredictionSpec.from_metadata(metadata)
            rows += throughput(
                task, model, spec, sample, args.data / SPACENET / LABELS, folder, args
            )
            if task == 'segment' and args.steady_size:
                # Fixed costs (opening, the COG's overviews) weigh less on a larger
                # scene: the sample tiled to --steady-size px.
                big = folder / f'steady-{args.steady_size}.tif'
                write_scene(big, args.steady_size, sample)
                rows += throughput(
                    task, model, spec, big, args.data / SPACENET / LABELS, folder,
                    args, scene_name=f', {args.steady_size} px scene',
                )  # fmt: skip
        memory = []
        if args.sizes:
            memory = memory_rows(
                args, folder, rss_model(args, models['segment']), sample
            )
    print_tables(args, rows, memory)
    if torch.cuda.is_available():
        print(
            '\nCUDA present: rerun with --model vit_base_patch16_224 --model-arg depth=12 for the ViT-B row.'
        )
    else:
        print('\nNo CUDA: the ViT-B row was not run.')


if __name__ == '__main__':
    main()
