"""The dspt-geo Processing provider: its algorithms in QGIS's toolbox."""

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import settings
from .algorithms import (
    EvaluateAlgorithm,
    InspectRastersAlgorithm,
    PredictSceneAlgorithm,
)

__all__ = ('DsptGeoProvider',)


class DsptGeoProvider(QgsProcessingProvider):
    """Provider ``dspt_geo``: Predict scene, Evaluate model, Inspect rasters."""

    def id(self) -> str:  # noqa: D102
        return 'dspt_geo'

    def name(self) -> str:  # noqa: D102
        return 'dspt-geo'

    def longName(self) -> str:  # noqa: D102
        return 'dspt-geo: pre-trained ViTs for remote sensing'

    def icon(self) -> QIcon:  # noqa: D102
        return QIcon(str(Path(__file__).with_name('icon.svg')))

    def load(self) -> bool:  # noqa: D102
        settings.register(self.name())
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:  # noqa: D102
        settings.unregister()

    def loadAlgorithms(self) -> None:  # noqa: D102
        for algorithm in (
            PredictSceneAlgorithm(),
            EvaluateAlgorithm(),
            InspectRastersAlgorithm(),
        ):
            self.addAlgorithm(algorithm)
