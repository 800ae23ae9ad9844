import json

import numpy as np
import pytest

from dspt_geo.data.labels import ClassTable, LabelError, default_palette


def test_defaults_fill_colours_values_and_black_background():
    table = ClassTable(names=('background', 'building', 'road'))

    assert table.num_classes == 3
    assert table.values == (0, 1, 2)
    assert table.colours[0] == (0, 0, 0)
    assert len(set(table.colours)) == 3
    assert table.ignore_index == 255


def test_default_palette_is_distinct_beyond_its_fixed_colours():
    colours = default_palette(40)
    assert len(set(colours)) == 40
    assert all(0 <= c <= 255 for colour in colours for c in colour)


def test_json_round_trip(tmp_path):
    table = ClassTable(
        names=('water', 'forest'),
        colours=('#0000ff', (0, 128, 0)),
        values=(11, 42),
        ignore_index=-100,
        ignore_values=(0,),
    )

    assert ClassTable.from_json(table.to_json()) == table
    table.save(tmp_path / 'classes.json')
    assert ClassTable.read(tmp_path / 'classes.json') == table
    assert json.loads(table.to_json())['colours'] == ['#0000ff', '#008000']


def test_reads_user_colour_tables(tmp_path):
    (tmp_path / 'classes.csv').write_text(
        'class,colour,value\nwater,#0000FF,5\nroad,255 0 0,9\n'
    )
    (tmp_path / 'rgb.csv').write_text('name;r;g;b\nwater;0;0;255\n')
    (tmp_path / 'map.json').write_text('{"water": "#0000ff", "road": [255, 0, 0]}')

    csv_table = ClassTable.read(tmp_path / 'classes.csv')
    assert csv_table.names == ('water', 'road')
    assert csv_table.colours == ((0, 0, 255), (255, 0, 0))
    assert csv_table.values == (5, 9)
    assert ClassTable.read(tmp_path / 'rgb.csv').colours == ((0, 0, 255),)
    (tmp_path / 'names.csv').write_text('name\nwater\nland\n')
    assert ClassTable.read(tmp_path / 'names.csv').names == ('water', 'land')
    assert ClassTable.read(tmp_path / 'map.json').colours == ((0, 0, 255), (255, 0, 0))


def test_encode_values_maps_codes_and_ignores_nodata():
    table = ClassTable(names=('a', 'b', 'c'), values=(10, 20, 30), ignore_values=(0,))
    raw = np.array([[10, 20], [30, 0]], dtype=np.uint8)
    unlabelled = np.array([[False, True], [False, False]])

    out = table.encode_values(raw, unlabelled)

    np.testing.assert_array_equal(out, [[0, 255], [2, 255]])
    assert out.dtype == np.int64


def test_values_outside_the_table_raise_naming_them():
    table = ClassTable(names=('a', 'b'), values=(1, 2))
    with pytest.raises(LabelError, match=r'values 7 that are not in the class table'):
        table.encode_values(np.array([1, 2, 7]), source='mask.tif')


def test_encode_colours_and_unknown_colours():
    table = ClassTable(names=('water', 'road'), colours=('#0000ff', '#ff0000'))
    rgb = np.zeros((3, 1, 3), np.uint8)
    rgb[2, 0, 0] = 255  # blue
    rgb[0, 0, 1] = 255  # red
    rgb[:, 0, 2] = 255  # white: not a class

    with pytest.raises(LabelError, match='#ffffff'):
        table.encode_colours(rgb)
    unlabelled = np.array([[False, False, True]])
    np.testing.assert_array_equal(table.encode_colours(rgb, unlabelled), [[0, 1, 255]])


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'names': ()}, LabelError, 'at least one class'),
        ({'names': ('a', 'a')}, LabelError, 'more than once'),
        ({'names': ('a', '')}, LabelError, 'empty'),
        ({'names': ('a', 'b'), 'colours': ('#000000',)}, LabelError, '1 colours'),
        ({'names': ('a', 'b'), 'ignore_index': 1}, ValueError, 'is a class index'),
        ({'names': ('a',), 'colours': ('blue',)}, LabelError, 'not a colour'),
    ],
)
def test_bad_tables_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        ClassTable(**kwargs)


def test_labels_are_found_by_name_or_value():
    table = ClassTable.from_labels([3, 1, 3.0, '12'])
    assert table.names == ('1', '3', '12')
    assert table.index_of_label(3.0) == 1
    assert table.index_of_label('12') == 2
    assert ClassTable.from_labels(['class10', 'class2']).names == ('class2', 'class10')
    folders = ClassTable.from_labels(['01', '02'], numeric=False)
    assert folders.names == ('01', '02')
    assert folders.index_of_label('02') == 1
    with pytest.raises(LabelError, match='not in the class table'):
        table.index_of_label('7')
