"""The dspt-geo Processing algorithms: Predict scene, Evaluate, Inspect rasters.

Each one builds a dspt-geo command line from its parameters and runs it through
:func:`runner.run_cli`: progress goes to QGIS's progress bar, dspt-geo's messages to
the log, cancel stops the run (which then leaves no output), and an error is
reported with dspt-geo's own message.
"""

import json
import struct
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from . import settings
from .runner import Cancelled, CliResult, find_executable, run_cli

__all__ = ('EvaluateAlgorithm', 'InspectRastersAlgorithm', 'PredictSceneAlgorithm')


def model_task(path: str) -> str:
    """The task of a fine-tuned model file, read from its safetensors header.

    A safetensors file starts with the header's length (8 bytes, little endian)
    and the header as JSON; dspt-geo keeps its metadata there as strings.
    """
    try:
        with open(path, 'rb') as file:
            (length,) = struct.unpack('<Q', file.read(8))
            header = json.loads(file.read(min(length, 64 * 2**20)))
        metadata = header.get('__metadata__', {})
        task = metadata.get('task') or json.loads(metadata.get('dspt_geo', '{}')).get(
            'task'
        )
    except (OSError, ValueError, struct.error, AttributeError):
        return ''
    return str(task or '')


class _StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies the ``.qml`` style dspt-geo wrote beside an output when it is loaded."""

    # Processing keeps only a raw pointer: the instances live here.
    _alive: ClassVar[list['_StylePostProcessor']] = []

    def __init__(self, style: Path) -> None:
        """Remember *style* (a ``.qml`` path)."""
        super().__init__()
        self.style = style
        _StylePostProcessor._alive.append(self)

    def postProcessLayer(
        self,
        layer: QgsMapLayer,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> None:
        """Load the style into the freshly loaded layer."""
        if layer is not None and self.style.is_file():
            layer.loadNamedStyle(str(self.style))
            layer.triggerRepaint()


class _DsptGeoAlgorithm(QgsProcessingAlgorithm):
    """Shared plumbing: the group, the run, the error mapping."""

    def group(self) -> str:
        return ''

    def groupId(self) -> str:
        return ''

    def createInstance(self) -> '_DsptGeoAlgorithm':
        return type(self)()

    def flags(self) -> Any:
        # Runs a subprocess: safe off the main thread; cancel is honoured.
        return super().flags() | QgsProcessingAlgorithm.FlagCanCancel

    def run_dspt_geo(
        self, args: list[str], feedback: QgsProcessingFeedback
    ) -> CliResult:
        """Run ``dspt-geo ARGS``; raise QgsProcessingException with its error."""
        try:
            executable = find_executable(settings.executable())
        except FileNotFoundError as error:
            raise QgsProcessingException(str(error)) from error
        feedback.pushCommandInfo(' '.join(['dspt-geo', *args]))
        try:
            result = run_cli(
                executable,
                args,
                on_progress=feedback.setProgress,
                on_log=feedback.pushInfo,
                is_cancelled=feedback.isCanceled,
            )
        except Cancelled as error:
            raise QgsProcessingException(str(error)) from error
        if result.returncode != 0:
            raise QgsProcessingException(result.message)
        return result


class PredictSceneAlgorithm(_DsptGeoAlgorithm):
    """Predict scene: a raster layer and a fine-tuned model -> a styled mask or boxes."""

    INPUT, MODEL, TILE, OVERLAP, PROBABILITIES = (
        'INPUT', 'MODEL', 'TILE', 'OVERLAP', 'PROBABILITIES'
    )  # fmt: skip
    OUTPUT, OUTPUT_DETECTIONS = 'OUTPUT', 'OUTPUT_DETECTIONS'

    def name(self) -> str:  # noqa: D102
        return 'predict'

    def displayName(self) -> str:  # noqa: D102
        return 'Predict scene'

    def shortHelpString(self) -> str:  # noqa: D102
        return (
            'Runs a fine-tuned dspt-geo model (model.safetensors) over a whole raster '
            'layer in overlapping windows. Segmentation and classification models '
            'write a class raster (Cloud-Optimized GeoTIFF with a colour table); '
            'detection models write boxes to a GeoPackage. Outputs load styled. '
            'Runs `dspt-geo predict` in the configured Python environment.'
        )

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: D102
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, 'Scene'))
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                'Fine-tuned model (model.safetensors)',
                extension='safetensors',
            )
        )
        windows = (
            (self.TILE, 'Window size (0: model default)'),
            (self.OVERLAP, 'Window overlap (-1: model default)'),
        )
        for name, label in windows:
            self.addParameter(
                QgsProcessingParameterNumber(
                    name,
                    label,
                    QgsProcessingParameterNumber.Integer,
                    defaultValue=0 if name == self.TILE else -1,
                    minValue=-1,
                )
            )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.PROBABILITIES, 'Also write class probabilities', defaultValue=False
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT,
                'Class raster (segmentation, classification)',
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT_DETECTIONS,
                'Detections (detection)',
                QgsProcessing.TypeVectorPolygon,
                optional=True,
            )
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Run ``dspt-geo predict`` and hand its output to QGIS."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        scene = layer.source().split('|')[0] if layer is not None else ''
        if not Path(scene).is_file():
            raise QgsProcessingException(
                f'the scene must be a raster file, not {scene!r}'
            )
        model = self.parameterAsFile(parameters, self.MODEL, context)
        detect = model_task(model) == 'detect'
        key = self.OUTPUT_DETECTIONS if detect else self.OUTPUT
        out = self.parameterAsOutputLayer(parameters, key, context)
        args = ['predict', scene, '--model', model, '--out', out, '--overwrite']
        tile = self.parameterAsInt(parameters, self.TILE, context)
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        if tile > 0:
            args += ['--tile', str(tile)]
        if overlap >= 0:
            args += ['--overlap', str(overlap)]
        if self.parameterAsBool(parameters, self.PROBABILITIES, context):
            args.append('--probabilities')
        self.run_dspt_geo(args, feedback)
        if context.willLoadLayerOnCompletion(out):
            style = _StylePostProcessor(Path(out).with_suffix('.qml'))
            context.layerToLoadOnCompletionDetails(out).setPostProcessor(style)
        return {key: out}


class EvaluateAlgorithm(_DsptGeoAlgorithm):
    """Evaluate: a fine-tuned model's metrics on labelled imagery."""

    INPUT, LABELS, MODEL, OUTPUT, REPORT = (
        'INPUT',
        'LABELS',
        'MODEL',
        'OUTPUT',
        'REPORT',
    )

    def name(self) -> str:  # noqa: D102
        return 'evaluate'

    def displayName(self) -> str:  # noqa: D102
        return 'Evaluate model'

    def shortHelpString(self) -> str:  # noqa: D102
        return (
            'Scores a fine-tuned model on labelled imagery with the standard '
            'metrics (accuracy, mIoU, mAP) and writes the report as JSON. Labels: a '
            'label raster, vector polygons/boxes or any form `dspt-geo finetune` reads.'
        )

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: D102
        self.addParameter(
            QgsProcessingParameterFile(
                self.INPUT,
                'Images (a raster file or a folder)',
                behavior=QgsProcessingParameterFile.File,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.LABELS, 'Labels (raster or vector file)', optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                'Fine-tuned model (model.safetensors)',
                extension='safetensors',
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT, 'Report (JSON)', fileFilter='JSON (*.json)'
            )
        )
        self.addOutput(QgsProcessingOutputString(self.REPORT, 'Report'))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Run ``dspt-geo evaluate``."""
        images = self.parameterAsFile(parameters, self.INPUT, context)
        labels = self.parameterAsFile(parameters, self.LABELS, context)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        args = ['evaluate', model, '--images', images, '--json', out]
        if labels:
            args += ['--labels', labels]
        result = self.run_dspt_geo(args, feedback)
        for line in result.stdout.splitlines():
            feedback.pushInfo(line)
        report = Path(out).read_text() if Path(out).is_file() else result.stdout
        return {self.OUTPUT: out, self.REPORT: report}


class InspectRastersAlgorithm(_DsptGeoAlgorithm):
    """Inspect rasters: the sensor groups dspt-geo sees in raster layers."""

    INPUT, OUTPUT, REPORT = 'INPUT', 'OUTPUT', 'REPORT'

    def name(self) -> str:  # noqa: D102
        return 'info'

    def displayName(self) -> str:  # noqa: D102
        return 'Inspect rasters'

    def shortHelpString(self) -> str:  # noqa: D102
        return (
            'Shows how dspt-geo reads raster layers for training: sensor groups, '
            'bands, CRS and resolution, nodata, skipped files (`dspt-geo info`).'
        )

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: D102
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.INPUT, 'Raster layers', QgsProcessing.TypeRaster
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT,
                'Description (JSON)',
                fileFilter='JSON (*.json)',
                optional=True,
            )
        )
        self.addOutput(QgsProcessingOutputString(self.REPORT, 'Description'))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Run ``dspt-geo info --json`` on the layers' files."""
        layers = self.parameterAsLayerList(parameters, self.INPUT, context)
        paths = [layer.source().split('|')[0] for layer in layers]
        result = self.run_dspt_geo(['info', *paths, '--json'], feedback)
        description = result.stdout
        feedback.pushInfo(description)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if out:
            Path(out).write_text(description)
        return {self.OUTPUT: out, self.REPORT: description}
