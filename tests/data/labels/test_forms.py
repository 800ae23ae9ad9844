"""The dispatcher's format checks: each form is told before any reader runs."""

import numpy as np

from dspt_geo.data.labels.forms import coco, label_rasters


def test_label_rasters_need_georeferenced_labels_and_images(
    raster_writer, png_writer, tmp_path
):
    image = raster_writer('img/scene.tif', np.ones((3, 16, 16), np.uint16))
    labels = raster_writer('lab/classes.tif', np.ones((16, 16), np.uint8))
    plain = raster_writer('plain/m.tif', np.ones((16, 16), np.uint8), crs=None)
    chips = png_writer('chips/a.png', np.ones((3, 16, 16), np.uint8)).parent

    assert label_rasters.matches([str(image)], [str(labels)])
    assert not label_rasters.matches([str(chips)], [str(labels)])
    assert not label_rasters.matches([str(image)], [str(plain)])
    # Labels inside the image folder are not images.
    inside = raster_writer('only/lab.tif', np.ones((16, 16), np.uint8))
    assert not label_rasters.matches([str(inside.parent)], [str(inside)])


def test_coco_is_told_from_geojson_by_its_start(tmp_path):
    (tmp_path / 'c.json').write_text('{"images": [], "annotations": []}')
    (tmp_path / 'g.json').write_text('{"type": "FeatureCollection", "features": []}')

    assert coco.matches(str(tmp_path / 'c.json'))
    assert not coco.matches(str(tmp_path / 'g.json'))
