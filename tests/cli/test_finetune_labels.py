"""Labels in their common forms through ``dspt-geo finetune`` (issue 9, items 1-6).

Aerial-style JPEG tiles with palette PNG masks, integer masks named by sidecars or
a class table, vector labels without a class column, chips of other sizes than
``--image-size``, and messages that name CLI options.
"""

import json

import numpy as np
import pytest
from PIL import Image

from dspt_geo.models import load_finetuned

#: A short run: the tests check what the data became, not what the model learnt.
SHORT = ['--steps', '2', '--batch-size', '4', '--head-arg', 'channels=16']


def class_names(run):
    """Class names of a run's model file."""
    _, metadata = load_finetuned(run / 'model.safetensors')
    return [c['name'] for c in metadata['classes']]


def aerial_tiles(mask_files, root, count=3, shape=(650, 800), seed=0):
    """JPEG tiles with palette PNG masks (values 0..3), as aerial sets ship them."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        (root / 'images').mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / 'images' / f'tile_{i}.jpg')
        mask_files.palette_png(
            root / 'masks' / f'tile_{i}.png', rng.integers(0, 4, shape)
        )
    return root


def test_aerial_jpeg_tiles_with_palette_masks(mask_files, tmp_path, tiny, cli_run):
    root = aerial_tiles(mask_files, tmp_path / 'aerial')
    # Named in another order than the palette: matched by colour.
    rows = [('water', 3), ('building', 1), ('land', 0), ('tree', 2)]
    (tmp_path / 'classes.csv').write_text(
        'name,colour\n'
        + ''.join(
            '{},#{:02x}{:02x}{:02x}\n'.format(n, *mask_files.PALETTE[v])
            for n, v in rows
        )
    )
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'segment', '--images', root / 'images', '--labels', root / 'masks',
        '--class-table', tmp_path / 'classes.csv', '--out', run, *tiny.vit,
        '--image-size', 128, *SHORT,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert 'skipping' not in result.stderr, 'the masks are used, not skipped'
    assert 'not an RGB colour mask' not in result.stderr
    # 650 x 800 tiles: 6 x 7 windows of 128 px each, never down-sampled.
    assert 'mask chips of 650 x 800 px are cut into 126 windows' in result.stderr
    assert class_names(run) == ['water', 'building', 'land', 'tree']
    _, metadata = load_finetuned(run / 'model.safetensors')
    assert metadata['classes'][0]['colour'] == list(mask_files.PALETTE[3])


def test_palette_masks_without_a_table_are_class_indices(
    mask_files, tmp_path, tiny, cli_run
):
    root = aerial_tiles(mask_files, tmp_path / 'aerial', count=2, shape=(24, 72))
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'segment', '--images', root / 'images', '--labels', root / 'masks',
        '--out', run, *tiny.vit, '--image-size', 32, '--split', 'none', *SHORT,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    _, metadata = load_finetuned(run / 'model.safetensors')
    assert [c['name'] for c in metadata['classes']] == ['0', '1', '2', '3']
    assert [tuple(c['colour']) for c in metadata['classes']] == [
        mask_files.PALETTE[v] for v in range(4)
    ]
    assert '2 smaller in a side and padded' in result.stderr  # 24 px rows


def integer_mask_chips(root, seed=0):
    """PNG image chips with 8-bit integer masks of values 1, 2 and 4."""
    rng = np.random.default_rng(seed)
    for i in range(2):
        (root / 'masks').mkdir(parents=True, exist_ok=True)
        (root / 'images').mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / 'images' / f'c{i}.png')
        values = rng.choice([1, 2, 4], (32, 32)).astype(np.uint8)
        Image.fromarray(values, mode='L').save(root / 'masks' / f'c{i}.png')
    return root


@pytest.mark.parametrize('source', ['aux.xml', 'class-table'])
def test_integer_masks_take_class_names(mask_files, source, tmp_path, tiny, cli_run):
    root = integer_mask_chips(tmp_path / 'chips')
    options = []
    if source == 'aux.xml':
        mask_files.aux_xml_categories(
            root / 'masks' / 'c0.png', ['', 'road', 'roof', '', 'tree']
        )
    else:
        table = tmp_path / 'classes.json'
        table.write_text(
            json.dumps({'names': ['road', 'roof', 'tree'], 'values': [1, 2, 4]})
        )
        options = ['--class-table', table]
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'segment', '--images', root / 'images', '--labels', root / 'masks',
        *options, '--out', run, *tiny.vit, '--image-size', 32, '--split', 'none',
        *SHORT,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert class_names(run) == ['road', 'roof', 'tree']
    assert 'skipping' not in result.stderr


def test_vector_labels_without_a_class_column(labelled, tmp_path, tiny, cli_run):
    root = labelled.squares
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'segment', '--images', root / 'images', '--labels',
        root / 'boxes.gpkg', '--class-name', 'square', '--out', run, *tiny.vit,
        '--image-size', 64, '--split', 'none', *SHORT,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert class_names(run) == ['background', 'square']


def test_classification_chips_of_another_size_are_resized(
    labelled, tmp_path, tiny, cli_run
):
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'classify', '--images', labelled.chips, '--out', run,
        *tiny.vit, '--image-size', 16, '--steps', 1, '--batch-size', 4,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stderr.count('resized whole to 16 x 16 px') == 1


def test_colour_masks_without_a_table_name_the_option(
    tmp_path, tiny, cli_run, user_error
):
    rng = np.random.default_rng(0)
    for folder in ('images', 'masks'):
        (tmp_path / folder).mkdir()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / folder / 'a.png'
        )

    result = cli_run(
        'finetune', 'segment', '--images', tmp_path / 'images', '--labels',
        tmp_path / 'masks', '--out', tmp_path / 'run', *tiny.vit, '--steps', 1,
    )  # fmt: skip

    user_error(result, 'colour-coded masks need a class/colour table', '--class-table')
    assert 'class_table=' not in result.output
    assert not (tmp_path / 'run').exists()
