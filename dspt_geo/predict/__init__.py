"""Whole-scene prediction: windows, blending, COG and vector writers, QGIS styles.

:func:`predict_scene` runs any :class:`torch.nn.Module` over a scene of any size,
fed as its :class:`PredictionSpec` (read from the model file's metadata) says, and
writes a class raster or detections that open georeferenced and styled in QGIS;
:func:`write_qgis_project` puts the scene and the outputs in a ``.qgz`` project.
"""

from .detections import merge_boxes
from .qgis import categorized_qml, palette_qml, write_qgis_project
from .run import PredictionResult, predict_scene
from .scene import SceneReader, select_bands
from .spec import TASKS, PredictionSpec, Task
from .tiling import StripAccumulator, TileGrid, blend_weights, window_starts

__all__ = (
    'TASKS',
    'PredictionResult',
    'PredictionSpec',
    'SceneReader',
    'StripAccumulator',
    'Task',
    'TileGrid',
    'blend_weights',
    'categorized_qml',
    'merge_boxes',
    'palette_qml',
    'predict_scene',
    'select_bands',
    'window_starts',
    'write_qgis_project',
)
