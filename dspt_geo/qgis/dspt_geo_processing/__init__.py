"""dspt-geo for QGIS: a Processing provider that runs the dspt-geo command line.

Installed into a QGIS profile by ``dspt-geo qgis-plugin install``. It imports only
QGIS and the standard library; dspt-geo itself runs in its own Python environment.
"""

from typing import Any


def classFactory(iface: Any) -> Any:
    """The plugin object QGIS asks for."""
    from .plugin import DsptGeoPlugin

    return DsptGeoPlugin(iface)
