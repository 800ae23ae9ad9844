"""``dspt-geo evaluate``: reports, the confusion matrix, and input it refuses."""

import json

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from dspt_geo.models import save_model_file


def test_classification_report_and_confusion_matrix(
    trained, labelled, tiny, cli_run, tmp_path
):
    out = tmp_path / 'report.json'

    result = cli_run(
        'evaluate', trained('classify') / 'model.safetensors',
        *tiny.data(labelled, 'classify', test=True), '--json', out,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert 'overall accuracy' in result.stdout
    report = json.loads(out.read_text())
    assert report['classes'] == ['bright', 'dark', 'stripes']
    assert report['samples'] == 24
    matrix = np.array(report['confusion_matrix'])
    assert matrix.shape == (3, 3) and matrix.sum() == 24
    assert report['accuracy'] == pytest.approx(np.trace(matrix) / 24)
    for i, name in enumerate(report['classes']):
        row = report['per_class'][name]
        assert row['support'] == 8
        assert row['accuracy'] == pytest.approx(matrix[i, i] / 8)
    png = tmp_path / 'report_confusion.png'
    assert report['confusion_matrix_png'] == str(png)
    pixels = np.asarray(Image.open(png))
    assert pixels.ndim == 3 and pixels.std() > 10


def test_segmentation_report_per_class(trained, labelled, tiny, cli_run, tmp_path):
    out = tmp_path / 'report.json'

    result = cli_run(
        'evaluate', trained('segment') / 'model.safetensors',
        *tiny.data(labelled, 'segment', test=True), '--json', out,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    # Every labelled pixel of the 128 x 128 test scene counted once, though the
    # 32 px windows overlap by 8.
    assert report['pixels'] == 128 * 128
    rows = report['per_class']
    assert sum(row['support'] for row in rows.values()) == 128 * 128
    ious = [row['iou'] for row in rows.values()]
    assert report['miou'] == pytest.approx(np.mean(ious))
    assert all(0 <= row['f1'] <= 1 and row['f1'] >= row['iou'] for row in rows.values())


@pytest.mark.parametrize('options', [(), ('--overlap', '4', '--batch-size', '3')])
def test_evaluate_scores_exactly_what_predict_writes(
    options, trained, labelled, cli_run, tmp_path
):
    model = trained('segment') / 'model.safetensors'
    scene = next((labelled.shapes_test / 'images').glob('*.tif'))
    labels = labelled.shapes_test / 'labels' / scene.name
    mask = tmp_path / 'mask.tif'

    predicted = cli_run('predict', scene, '--model', model, '--out', mask, *options)
    evaluated = cli_run(
        'evaluate', model, '--images', scene, '--labels', labels,
        '--json', tmp_path / 'report.json', *options,
    )  # fmt: skip

    assert predicted.exit_code == 0, predicted.output
    assert evaluated.exit_code == 0, evaluated.output
    assert f'{scene.name}: 100%' in evaluated.stderr, 'the progress bar of predict'
    report = json.loads((tmp_path / 'report.json').read_text())
    with rasterio.open(mask) as out, rasterio.open(labels) as truth:
        written, expected = out.read(1).astype(int), truth.read(1).astype(int)
    scored = written != 255
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (expected[scored], written[scored]), 1)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    assert report['pixels'] == scored.sum()
    assert report['miou'] == pytest.approx((tp[present] / union[present]).mean())
    supports = [row['support'] for row in report['per_class'].values()]
    assert supports == confusion.sum(1).tolist()


# Input evaluate refuses: one message, exit 1, no report written.


def test_a_model_file_of_another_kind(labelled, cli_run, user_error, tmp_path):
    pretrained = tmp_path / 'pretrained.safetensors'
    save_model_file(pretrained, {'w': torch.zeros(2)}, {'kind': 'mae-pretrained'})
    out = tmp_path / 'report.json'

    result = cli_run('evaluate', pretrained, '--images', labelled.chips, '--json', out)

    user_error(result, 'not a fine-tuned model', 'pre-trained MAE encoder')
    assert not out.exists()


def test_images_of_another_band_layout(trained, writers, cli_run, user_error, tmp_path):
    chips = writers.chips(tmp_path / 'grey', {'': 2}, seed=3, bands=1)
    out = tmp_path / 'report.json'

    result = cli_run(
        'evaluate', trained('classify') / 'model.safetensors', '--images', chips,
        '--json', out,
    )  # fmt: skip

    user_error(result, 'the images have 1 bands', 'takes 3')
    assert not out.exists()


def test_labels_of_another_task(trained, labelled, tiny, cli_run, user_error, tmp_path):
    out = tmp_path / 'report.json'

    result = cli_run(
        'evaluate', trained('classify') / 'model.safetensors',
        *tiny.data(labelled, 'segment'), '--json', out,
    )  # fmt: skip

    user_error(result, 'classification labels are')
    assert not out.exists()


def test_mask_values_outside_the_models_classes(
    trained, labelled, writers, cli_run, user_error, tmp_path
):
    masks = np.zeros((128, 128), np.uint8)
    masks[5:9, 5:9] = 7
    labels = writers.tif(tmp_path / 'labels' / 's0.tif', masks)
    out = tmp_path / 'report.json'

    result = cli_run(
        'evaluate', trained('segment') / 'model.safetensors',
        '--images', labelled.shapes / 'images' / 's0.tif', '--labels', labels,
        '--json', out,
    )  # fmt: skip

    user_error(result, 'values 7 that are not in the class table')
    assert not out.exists()


def test_images_take_several_paths_after_one_option(
    trained, labelled, cli_run, tmp_path
):
    """``--images a.tif b.tif`` (as a shell glob gives them) reads both files."""
    model = trained('segment') / 'model.safetensors'
    images = sorted((labelled.shapes / 'images').glob('*.tif'))
    labels = ['--labels', labelled.shapes / 'labels']

    folder = cli_run(
        'evaluate', model, '--images', labelled.shapes / 'images', *labels,
        '--json', tmp_path / 'folder.json',
    )  # fmt: skip
    files = cli_run(
        'evaluate',
        model,
        '--images',
        *images,
        *labels,
        '--json',
        tmp_path / 'files.json',
    )

    assert folder.exit_code == files.exit_code == 0, files.output
    by_folder = json.loads((tmp_path / 'folder.json').read_text())
    by_files = json.loads((tmp_path / 'files.json').read_text())
    assert len(images) == 2 and by_files['images'] == [str(p) for p in images]
    assert by_files['pixels'] == by_folder['pixels'] == 2 * 128 * 128
    assert by_files['miou'] == by_folder['miou']
