"""Scene box mAP of a fine-tuned detector on the SpaceNet sample, held-out blocks apart.

``predict_scene`` runs over the whole sample scene (900 x 900 px, 43 footprints)
twice: with the model's own proposal and detection limits (``max_objects`` large,
what predict did before issue 16: 1,000 proposals and 100 detections per window)
and with the limits sized to the window (the default). Each run's detections are
scored against the footprints (COCO mAP and mAP@0.5 with every detection of the
scene counted, as ``benchmarks/predict.py``) over the whole scene, and, when the
model's run folder holds ``splits/val.txt`` (a block split), separately over the
validation blocks (held out from training) and the rest (trained on): a box or
footprint belongs to the part its centre lies in. Besides mAP: recall at IoU 0.5
and the median scores of true (IoU >= 0.5 with a footprint) and false boxes.

Usage::

    python benchmarks/detect_map.py RUN_DIR --data ../shared/data [--score-threshold 0.05]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import torch
from predict import LABELS, SCENE, SPACENET, pixel_boxes
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

from dspt_geo.models import load_finetuned
from dspt_geo.predict import PredictionSpec, predict_scene


def val_blocks(run: Path, transform: Any) -> list[tuple[float, ...]]:
    """Pixel boxes (x0, y0, x1, y1) of the run's validation cells; [] without."""
    path = run / 'splits' / 'val.txt'
    if not path.exists():
        return []
    blocks = []
    for line in path.read_text().splitlines():
        left, bottom, right, top = map(float, line.split('\t')[1].split())
        x0, y0 = ~transform * (left, top)
        x1, y1 = ~transform * (right, bottom)
        blocks.append((x0, y0, x1, y1))
    return blocks


def in_blocks(boxes: torch.Tensor, blocks: list[tuple[float, ...]]) -> torch.Tensor:
    """Whether each box's centre lies in one of *blocks*."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = torch.zeros(len(boxes), dtype=torch.bool)
    for x0, y0, x1, y1 in blocks:
        inside |= (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    return inside


def score(boxes: torch.Tensor, scores: torch.Tensor, truth: torch.Tensor) -> dict:
    """mAP, mAP@0.5, recall@0.5 and the median scores of true and false boxes."""
    metric = MeanAveragePrecision(
        box_format='xyxy', iou_type='bbox', max_detection_thresholds=[1, 100, 10**5]
    )
    zeros = torch.zeros
    metric.update(
        [{'boxes': boxes, 'scores': scores, 'labels': zeros(len(boxes)).long()}],
        [{'boxes': truth, 'labels': zeros(len(truth)).long()}],
    )
    result = metric.compute()
    iou = box_iou(boxes, truth) if len(boxes) else zeros(0, len(truth))
    hit = iou.max(1).values >= 0.5 if len(truth) else zeros(len(boxes)).bool()
    found = iou.max(0).values >= 0.5 if len(boxes) else zeros(len(truth)).bool()

    def median(values: torch.Tensor) -> float | None:
        return round(float(values.median()), 3) if len(values) else None

    return {
        'footprints': len(truth),
        'boxes': len(boxes),
        'map': round(float(result['map']), 3),
        'map_50': round(float(result['map_50']), 3),
        'recall_50': round(float(found.float().mean()), 3),
        'true_score': median(scores[hit]),
        'false_score': median(scores[~hit]),
    }


def main() -> None:
    """Print one JSON row per run (limits) and part (all, val, train)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('run', type=Path, help='run folder of dspt-geo finetune detect')
    parser.add_argument('--data', type=Path, default=Path('../shared/data'))
    parser.add_argument('--score-threshold', type=float, default=0.05)
    args = parser.parse_args()
    folder = args.data / SPACENET
    scene = folder / SCENE
    model, metadata = load_finetuned(args.run / 'model.safetensors')
    spec = PredictionSpec.from_metadata(metadata)
    with rasterio.open(scene) as src:
        transform, crs = src.transform, src.crs
    truth = pixel_boxes(gpd.read_file(folder / LABELS).to_crs(crs), transform)
    blocks = val_blocks(args.run, transform)
    runs = {'model limits (before)': {'max_objects': 10**6}, 'sized (after)': {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in runs.items():
            out = Path(tmp) / 'detections.gpkg'
            start = time.perf_counter()
            predict_scene(
                scene, model.eval(), spec, out, batch_size=8, progress=False,
                overwrite=True, device='cpu', score_threshold=args.score_threshold,
                **options,
            )  # fmt: skip
            seconds = round(time.perf_counter() - start, 1)
            found = gpd.read_file(out, layer='detections')
            boxes = pixel_boxes(found, transform)
            scores = torch.tensor(found.score.to_numpy(np.float32))
            above = int((scores >= spec.score_threshold).sum())
            parts = {
                'all': (torch.ones(len(boxes)).bool(), torch.ones(len(truth)).bool())
            }
            if blocks:
                val = (in_blocks(boxes, blocks), in_blocks(truth, blocks))
                parts['val (held out)'] = val
                parts['train'] = (~val[0], ~val[1])
            for part, (keep, keep_truth) in parts.items():
                row = {'run': name, 'part': part, 'seconds': seconds}
                if part == 'all':
                    row['above_stored_threshold'] = above
                row.update(score(boxes[keep], scores[keep], truth[keep_truth]))
                print(json.dumps(row), flush=True)


if __name__ == '__main__':
    main()
