"""The QGIS plugin object: registers the Processing provider."""

from typing import Any

from qgis.core import QgsApplication

from .provider import DsptGeoProvider

__all__ = ('DsptGeoPlugin',)


class DsptGeoPlugin:
    """Adds the dspt-geo provider to Processing (also under qgis_process)."""

    def __init__(self, iface: Any = None) -> None:
        """Keep QGIS's interface (None under qgis_process)."""
        self.iface = iface
        self.provider: DsptGeoProvider | None = None

    def initProcessing(self) -> None:
        """Register the provider (QGIS calls this for processing plugins)."""
        self.provider = DsptGeoProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """No extra GUI: the algorithms live in the Processing toolbox."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
