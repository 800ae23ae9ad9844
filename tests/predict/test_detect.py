import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import torch

from dspt_geo.errors import CheckpointError, ConfigError
from dspt_geo.predict import PredictionSpec, autotile, merge_boxes, predict_scene
from dspt_geo.predict.detections import DetectionAccumulator, detection_limits
from dspt_geo.predict.tiling import TileGrid

from .conftest import BlobDetector

RES, ORIGIN = 10.0, (500_000.0, 5_000_000.0)


@pytest.fixture
def detect_spec(metadata: dict[str, Any]) -> PredictionSpec:
    metadata.update(
        task='detect',
        classes=[
            {'name': 'boat', 'colour': [255, 0, 0]},
            {'name': 'ship', 'colour': [0, 0, 255]},
        ],
        tile={'size': 64, 'overlap': 32},
        score_threshold=0.5,
    )
    return PredictionSpec.from_metadata(metadata)


# Objects as (row0, row1, col0, col1, value): value 200 is a boat, 240 a ship.
OBJECTS = [
    (20, 35, 50, 70, 200),  # crosses the edge of the first window column (x = 64)
    (58, 75, 90, 100, 240),  # crosses window edges in x and y
    (5, 12, 5, 12, 200),  # inside the first window only
    (110, 118, 180, 196, 240),  # at the bottom-right scene corner
]


@pytest.fixture
def blob_scene(raster_writer: Callable[..., Path]) -> Path:
    data = np.full((3, 118, 196), 50, dtype=np.uint8)
    for row0, row1, col0, col1, value in OBJECTS:
        data[:, row0:row1, col0:col1] = value
    return raster_writer(
        'blobs.tif',
        data,
        nodata=0,
        origin=ORIGIN,
        res=RES,
        descriptions=['red', 'green', 'blue'],
    )


def test_objects_across_windows_are_found_once(
    blob_scene: Path, detect_spec: PredictionSpec, tmp_path: Path
) -> None:
    out = tmp_path / 'found.gpkg'
    result = predict_scene(blob_scene, BlobDetector(), detect_spec, out, progress=False)

    frame = gpd.read_file(out, layer='detections')
    assert result.detections == len(frame) == len(OBJECTS), (
        'no duplicate across windows'
    )
    assert frame.crs == rasterio.open(blob_scene).crs
    assert list(frame.columns) == [
        'class_id',
        'class_name',
        'score',
        'scene',
        'geometry',
    ]
    assert set(frame.scene) == {'blobs.tif'}
    expected = {
        (
            ORIGIN[0] + col0 * RES,
            ORIGIN[1] - row1 * RES,
            ORIGIN[0] + col1 * RES,
            ORIGIN[1] - row0 * RES,
            'ship' if value == 240 else 'boat',
        )
        for row0, row1, col0, col1, value in OBJECTS
    }
    found = {(*row.geometry.bounds, row.class_name) for row in frame.itertuples()}
    assert found == expected, 'whole boxes win over the parts cut by window edges'
    assert set(frame.class_id) == {0, 1} and frame.score.tolist() == pytest.approx(
        [0.9] * 4
    )
    assert all(
        g.geom_type == 'Polygon' and len(g.exterior.coords) == 5 for g in frame.geometry
    )
    assert result.style is not None and result.style.name == 'found.qml'


def test_geopackage_is_version_1_3_with_a_spatial_index(
    blob_scene: Path, detect_spec: PredictionSpec, tmp_path: Path
) -> None:
    out = tmp_path / 'found.gpkg'
    predict_scene(blob_scene, BlobDetector(), detect_spec, out, progress=False)

    with sqlite3.connect(out) as db:
        assert db.execute('PRAGMA application_id').fetchone()[0] == 0x47504B47  # 'GPKG'
        assert db.execute('PRAGMA user_version').fetchone()[0] == 10300
        tables = {
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert 'rtree_detections_geom' in tables
        assert (
            db.execute('SELECT count(*) FROM rtree_detections_geom').fetchone()[0] == 4
        )
        extension = db.execute(
            "SELECT extension_name FROM gpkg_extensions WHERE table_name='detections'"
        ).fetchall()
        assert ('gpkg_rtree_index',) in extension


@pytest.mark.parametrize('suffix', ['.geojson', '.fgb'])
def test_other_vector_formats_by_extension(
    blob_scene: Path, detect_spec: PredictionSpec, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f'found{suffix}'
    predict_scene(blob_scene, BlobDetector(), detect_spec, out, progress=False)
    frame = pyogrio.read_dataframe(out)
    assert len(frame) == len(OBJECTS) and frame.crs == 'EPSG:32633'
    assert {'class_id', 'class_name', 'score', 'scene'} <= set(frame.columns)


def test_score_threshold_and_empty_results(
    raster_writer: Callable[..., Path],
    blob_scene: Path,
    detect_spec: PredictionSpec,
    tmp_path: Path,
) -> None:
    high = predict_scene(
        blob_scene, BlobDetector(), detect_spec, tmp_path / 'a.gpkg', score_threshold=0.95,
        progress=False,
    )  # fmt: skip
    assert high.detections == 0
    frame = gpd.read_file(high.output)
    assert len(frame) == 0 and frame.crs == 'EPSG:32633'
    assert {'class_id', 'class_name', 'score', 'scene'} <= set(frame.columns)

    empty = raster_writer('empty.tif', np.zeros((3, 50, 50), np.uint8), nodata=0)
    for suffix in ('.gpkg', '.fgb', '.geojson'):
        result = predict_scene(
            empty,
            BlobDetector(),
            detect_spec,
            tmp_path / f'b_{suffix[1:]}{suffix}',
            progress=False,
        )
        assert result.all_nodata and result.detections == 0
        assert len(pyogrio.read_dataframe(result.output)) == 0


def test_detections_on_nodata_are_dropped(
    raster_writer: Callable[..., Path], detect_spec: PredictionSpec, tmp_path: Path
) -> None:
    class Everywhere(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
            return [
                {
                    'boxes': torch.tensor(
                        [[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0]]
                    ),
                    'labels': torch.tensor([1, 1]),
                    'scores': torch.tensor([0.9, 0.9]),
                }
                for _ in x
            ]

    data = np.full((3, 64, 64), 100, dtype=np.uint8)
    data[:, 32:, 32:] = 0
    scene = raster_writer('s.tif', data, nodata=0)
    result = predict_scene(
        scene, Everywhere(), detect_spec, tmp_path / 'a.gpkg', progress=False
    )
    assert result.detections == 1


def test_model_output_that_does_not_fit_the_spec_is_refused(
    blob_scene: Path, detect_spec: PredictionSpec, tmp_path: Path
) -> None:
    class TooMany(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
            return [
                {
                    'boxes': torch.tensor([[0.0, 0.0, 5.0, 5.0]]),
                    'labels': torch.tensor([7]),
                    'scores': torch.tensor([0.9]),
                }
                for _ in x
            ]

    with pytest.raises(
        CheckpointError, match='label 7 but its metadata names 2 classes'
    ):
        predict_scene(
            blob_scene, TooMany(), detect_spec, tmp_path / 'a.gpkg', progress=False
        )
    assert not (tmp_path / 'a.gpkg').exists()
    with pytest.raises(ConfigError, match=r'not found\.tif'):
        predict_scene(blob_scene, BlobDetector(), detect_spec, tmp_path / 'found.tif')


def test_merge_is_class_wise_and_prefers_whole_boxes() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # whole, lower score
            [0, 0, 6, 10],  # cut part of the same object, higher score
            [1, 1, 10, 10],  # same object, other class
            [0, 0, 9, 10],  # near-duplicate of the first (IoU 0.9)
            [50, 50, 60, 60],  # elsewhere
        ]
    )
    labels = np.array([1, 1, 2, 1, 1])
    scores = np.array([0.6, 0.9, 0.7, 0.5, 0.8])
    truncated = np.array([False, True, False, False, False])

    kept = merge_boxes(boxes, labels, scores, truncated)

    assert sorted(kept.tolist()) == [0, 2, 4]
    # Without the truncation flags, plain score order keeps the cut part instead.
    assert sorted(merge_boxes(boxes, labels, scores).tolist()) == [1, 2, 4]


def test_truncation_is_flagged_only_at_shared_window_edges() -> None:
    tiles = list(TileGrid(height=64, width=100, size=64, overlap=28))
    first, last = tiles
    found = DetectionAccumulator(score_threshold=0.5)
    valid = np.ones((64, 64), dtype=bool)
    box = np.array([[0.0, 0.0, 64.0, 20.0]])
    found.add(first, box, np.array([1]), np.array([0.9]), valid)
    found.add(last, box, np.array([1]), np.array([0.9]), valid)
    # The first window's right edge is shared; the last window's right edge and
    # every top/bottom edge lie on the scene edge.
    assert found.truncated[0].tolist() == [True]
    assert found.truncated[1].tolist() == [True]  # its left edge is shared
    np.testing.assert_array_equal(found.boxes[1], [[36.0, 0.0, 100.0, 20.0]])


class LimitedBlobDetector(BlobDetector):
    """:class:`BlobDetector` that records the limits predict sets, and obeys them."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[tuple[int, int]] = []
        self.detections = 100

    @contextmanager
    def inference_limits(self, proposals: int, detections: int) -> Iterator[None]:
        self.limits.append((proposals, detections))
        self.detections = detections
        try:
            yield
        finally:
            self.detections = 100

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        found = super().forward(x)
        return [{k: v[: self.detections] for k, v in r.items()} for r in found]


def test_detection_limits_follow_the_window_area_and_the_labels() -> None:
    assert detection_limits(64, 64, 3) == (3, 140, 14)
    assert detection_limits(128, 64, 3) == (12, 320, 32), '4x the area, 4x objects'
    assert detection_limits(64, 64, 0) == (0, 80, 8)
    assert detection_limits(64, 64, None) == (16, 400, 40), 'one per 16 x 16 px'
    with pytest.raises(ValueError, match='max_objects'):
        detection_limits(64, 64, -1)


def test_detector_work_is_sized_to_the_window(
    blob_scene: Path, metadata: dict[str, Any], tmp_path: Path
) -> None:
    metadata.update(
        task='detect',
        classes=[{'name': 'boat'}, {'name': 'ship'}],
        tile={'size': 64, 'overlap': 32},
        max_objects=1,
    )
    spec = PredictionSpec.from_metadata(metadata)
    model = LimitedBlobDetector()

    stored = predict_scene(blob_scene, model, spec, tmp_path / 'a.gpkg', progress=False)
    given = predict_scene(
        blob_scene, model, spec, tmp_path / 'b.gpkg', tile=96, max_objects=0,
        progress=False,
    )  # fmt: skip
    unknown = predict_scene(
        blob_scene, model, replace(spec, max_objects=None), tmp_path / 'c.gpkg',
        progress=False,
    )  # fmt: skip

    assert model.limits == [(100, 10), (80, 8), (400, 40)]
    assert stored.detections == given.detections == unknown.detections == len(OBJECTS)
    assert model.detections == 100, 'the model gets its own limits back'
    with pytest.raises(ConfigError, match='max_objects'):
        predict_scene(
            blob_scene, model, spec, tmp_path / 'd.gpkg', max_objects=-1,
            progress=False,
        )  # fmt: skip


class SlowBlobDetector(BlobDetector):
    """:class:`BlobDetector` that takes 50 ms per window: larger windows are faster."""

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        time.sleep(0.05 * len(x))
        return super().forward(x)


@pytest.mark.parametrize('objects', [True, False])
def test_tile_auto_compares_detectors_only_on_windows_with_boxes(
    raster_writer: Callable[..., Path],
    metadata: dict[str, Any],
    tmp_path: Path,
    objects: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The search's rules without its budget: this scene is too small for a
    # search within it (see test_segment.py).
    monkeypatch.setattr(autotile, 'AUTO_BUDGET', math.inf)
    metadata.update(
        task='detect',
        classes=[{'name': 'boat'}, {'name': 'ship'}],
        tile={'size': 64, 'overlap': 16},
        score_threshold=0.5,
        model={'patch_size': 8},  # takes any multiple of 8 px
    )
    spec = PredictionSpec.from_metadata(metadata)
    data = np.full((3, 200, 200), 50, dtype=np.uint8)
    if objects:  # a grid of small boats, several in any probe window
        for row in range(8, 192, 24):
            for col in range(8, 192, 24):
                data[:, row : row + 8, col : col + 8] = 200
    scene = raster_writer('scene.tif', data, nodata=0, origin=ORIGIN, res=RES)

    auto = predict_scene(
        scene, SlowBlobDetector(), spec, tmp_path / 'a.gpkg', tile='auto',
        progress=False,
    )  # fmt: skip

    if objects:
        assert auto.tile > 64, 'boxes agree and larger windows are faster'
        assert auto.detections == 64
    else:
        assert auto.tile == 64, 'no box to compare: the training tile is kept'
        assert auto.detections == 0
