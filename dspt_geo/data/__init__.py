"""The data layer: raster and chip folders -> groups -> datasets -> patches."""

from .chips import ChipDataset, ChipStream
from .dataset import SensorDataset
from .discovery import ChipFile, RasterFile, ScanResult, SkippedFile, scan_rasters
from .groups import (
    ChipGroup,
    SensorGroup,
    discover_groups,
    group_chips,
    group_rasters,
    group_scan,
)
from .mixed import MixedDataset, MixedStream
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
    'ChipDataset',
    'ChipFile',
    'ChipGroup',
    'ChipStream',
    'MixedDataset',
    'MixedStream',
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
    'discover_groups',
    'group_chips',
    'group_rasters',
    'group_scan',
    'scan_rasters',
)
