"""Open prediction outputs in real QGIS; run by Debian's python3, prints JSON.

Usage: ``/usr/bin/python3 qgis_check.py '{"mask": ..., "detections": ..., "project":
..., "png": ..., "project_png": ...}'`` with ``QT_QPA_PLATFORM=offscreen``. It is
run in a subprocess so that QGIS's libraries (Qt, GDAL, PROJ) never meet the
virtual environment's.
"""

import json
import os
import sys

sys.path.insert(0, '/usr/lib/python3/dist-packages')

from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def render(layers: list, extent: QgsRectangle, crs: object, png: str) -> dict:
    """Render *layers* to *png*; count its colours."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(300, 300))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    image.save(png, 'PNG')
    colours = {image.pixel(x, y) for x in range(0, 300, 3) for y in range(0, 300, 3)}
    return {'colours': len(colours), 'errors': [e.message for e in job.errors()]}


def main() -> None:
    """Check the outputs named in argv[1]; print the findings as JSON."""
    args = json.loads(sys.argv[1])
    app = QgsApplication([], False)
    app.initQgis()
    messages: list[str] = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda text, tag, level: (
            messages.append(f'{tag}: {text}') if level >= Qgis.Warning else None
        )
    )
    out: dict = {'qgis': Qgis.version(), 'gdal': gdal.__version__}

    mask = QgsRasterLayer(args['mask'], 'mask')
    renderer = mask.renderer()
    out['mask'] = {
        'valid': mask.isValid(),
        'crs': mask.crs().authid(),
        'renderer': renderer.type(),
        'labels': [c.label for c in renderer.classes()]
        if renderer.type() == 'paletted'
        else [],
        'colours': [c.color.name() for c in renderer.classes()]
        if renderer.type() == 'paletted'
        else [],
    }
    dataset = gdal.Open(args['mask'])
    band = dataset.GetRasterBand(1)
    rat = band.GetDefaultRAT()
    out['mask']['gdal_categories'] = band.GetCategoryNames()
    out['mask']['gdal_rat'] = (
        [rat.GetValueAsString(i, 1) for i in range(rat.GetRowCount())] if rat else None
    )
    out['mask']['gdal_layout'] = dataset.GetMetadataItem('LAYOUT', 'IMAGE_STRUCTURE')
    dataset = None

    detections = QgsVectorLayer(
        f'{args["detections"]}|layername=detections', 'det', 'ogr'
    )
    vector_renderer = detections.renderer()
    out['detections'] = {
        'valid': detections.isValid(),
        'crs': detections.crs().authid(),
        'features': detections.featureCount(),
        'renderer': vector_renderer.type(),
        'field': getattr(vector_renderer, 'classAttribute', lambda: '')(),
        'labels': [c.label() for c in vector_renderer.categories()]
        if vector_renderer.type() == 'categorizedSymbol'
        else [],
        'fields': [f.name() for f in detections.fields()],
    }
    out['render'] = render([detections, mask], mask.extent(), mask.crs(), args['png'])

    project = QgsProject.instance()
    out['project'] = {'read': project.read(args['project'])}
    layers = list(project.mapLayers().values())
    out['project']['layers'] = sorted(
        (
            layer.name(),
            layer.isValid(),
            layer.crs().authid(),
            layer.renderer().type() if layer.renderer() else None,
        )
        for layer in layers
    )
    out['project']['crs'] = project.crs().authid()
    root = project.layerTreeRoot()
    ordered = [node.layer() for node in root.findLayers() if node.isVisible()]
    extent = QgsRectangle(mask.extent())
    out['project']['render'] = render(
        ordered, extent, project.crs(), args['project_png']
    )
    out['messages'] = messages
    print(json.dumps(out), flush=True)
    # Tearing QGIS down with layers alive may crash; the findings are out already.
    os._exit(0)


if __name__ == '__main__':
    main()
