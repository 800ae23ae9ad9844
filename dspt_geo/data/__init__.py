"""The data layer: raster folders -> sensor groups -> torchgeo datasets -> patches."""

from .dataset import SensorDataset
from .discovery import RasterFile, ScanResult, SkippedFile, scan_rasters
from .groups import SensorGroup, group_rasters
from .sar import (
    SAR_MODES,
    SAR_SCALES,
    SarConversion,
    SarMode,
    SarScale,
    complex_to_backscatter,
    detect_sar_scale,
)

__all__ = (
    'SAR_MODES',
    'SAR_SCALES',
    'RasterFile',
    'SarConversion',
    'SarMode',
    'SarScale',
    'ScanResult',
    'SensorDataset',
    'SensorGroup',
    'SkippedFile',
    'complex_to_backscatter',
    'detect_sar_scale',
    'group_rasters',
    'scan_rasters',
)
