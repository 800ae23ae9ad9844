"""Run dspt-geo's Processing algorithms in real QGIS; run by Debian's python3.

Usage: ``/usr/bin/python3 qgis_processing.py '{"plugins": DIR, "algorithm": ID,
"parameters": {...}, "cancel": bool}'`` with ``QT_QPA_PLATFORM=offscreen`` and
``DSPT_GEO_EXECUTABLE`` naming the virtual environment's dspt-geo. Prints one JSON
line: the results or the error, the progress seen, and the loaded output's style.
"""

import json
import sys

sys.path.insert(0, '/usr/lib/python3/dist-packages')
sys.path.insert(0, '/usr/share/qgis/python/plugins')

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingUtils,
    QgsProject,
)


class Feedback(QgsProcessingFeedback):
    """Keeps what the algorithm reports."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.errors: list[str] = []

    def pushInfo(self, info: str) -> None:
        self.log.append(info)

    def reportError(self, error: str, fatalError: bool = False) -> None:
        self.errors.append(error)


def main() -> None:
    """Run the algorithm named in argv[1]; print what happened as JSON."""
    args = json.loads(sys.argv[1])
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    sys.path.insert(0, args['plugins'])
    import dspt_geo_processing

    plugin = dspt_geo_processing.classFactory(None)
    plugin.initProcessing()
    registry = QgsApplication.processingRegistry()
    out: dict = {
        'algorithms': sorted(
            a.id() for a in registry.algorithms() if a.provider().id() == 'dspt_geo'
        )
    }
    algorithm = registry.createAlgorithmById(args['algorithm'])
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = Feedback()
    progress: list[float] = []
    feedback.progressChanged.connect(progress.append)
    feedback.progressChanged.connect(
        lambda value: feedback.cancel() if args.get('cancel') and value > 0 else None
    )
    parameters = dict(args['parameters'])
    for key, value in args.get('outputs', {}).items():
        definition = QgsProcessingOutputLayerDefinition(value)
        definition.destinationProject = QgsProject.instance()  # load on completion
        parameters[key] = definition
    try:
        results, ok = algorithm.run(parameters, context, feedback)
        out.update(ok=ok, results={k: str(v) for k, v in results.items()})
    except QgsProcessingException as error:
        out.update(ok=False, errors=[str(error)])
    out.setdefault('errors', feedback.errors)
    out.update(
        progress=[progress[0], progress[-1]] if progress else [], log=feedback.log
    )
    loaded = []
    for path in list(context.layersToLoadOnCompletion()):
        details = context.layerToLoadOnCompletionDetails(path)
        layer = QgsProcessingUtils.mapLayerFromString(path, context)
        if layer is None:
            continue
        if details.postProcessor() is not None:
            details.postProcessor().postProcessLayer(layer, context, feedback)
        renderer = layer.renderer()
        entry = {'path': path, 'valid': layer.isValid(), 'renderer': renderer.type()}
        if renderer.type() == 'paletted':
            entry['classes'] = [c.label for c in renderer.classes()]
        elif renderer.type() == 'categorizedSymbol':
            entry['classes'] = [c.label() for c in renderer.categories()]
        loaded.append(entry)
    out['loaded'] = loaded
    plugin.unload()
    print(json.dumps(out))


if __name__ == '__main__':
    main()
