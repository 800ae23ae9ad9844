"""The data layer: raster folders -> sensor groups -> torchgeo datasets -> patches."""

from .dataset import SensorDataset
from .discovery import RasterFile, ScanResult, SkippedFile, scan_rasters
from .groups import SensorGroup, group_rasters
from .sar import SAR_MODES, SarMode, complex_to_backscatter

__all__ = (
    'SAR_MODES',
    'RasterFile',
    'SarMode',
    'ScanResult',
    'SensorDataset',
    'SensorGroup',
    'SkippedFile',
    'complex_to_backscatter',
    'group_rasters',
    'scan_rasters',
)
