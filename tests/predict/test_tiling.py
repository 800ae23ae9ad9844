import itertools

import numpy as np
import pytest
import torch

from dspt_geo.predict import StripAccumulator, TileGrid, blend_weights, window_starts
from dspt_geo.predict.tiling import (
    FinishedRows,
    axis_profile,
    cell_tiles,
    tile_candidates,
)

from .conftest import ConvNet


@pytest.mark.parametrize('length', [1, 31, 32, 33, 80, 95, 96, 100, 1000])
@pytest.mark.parametrize(('size', 'overlap'), [(32, 0), (32, 8), (32, 31), (25, 12)])
def test_windows_cover_the_scene_exactly(length: int, size: int, overlap: int) -> None:
    starts = window_starts(length, size, overlap)

    covered = np.zeros(length, dtype=int)
    for start in starts:
        covered[start : start + size] += 1
    assert (covered >= 1).all(), 'no missed strip'
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length >= size:
        assert starts[-1] + size == length, 'the last window ends at the scene edge'
        assert all(0 <= s <= length - size for s in starts), (
            'no window reads past the edge'
        )
        assert all(b - a <= size - overlap for a, b in itertools.pairwise(starts))
    else:
        assert starts == [0], 'a small scene gets one padded window'


def test_grid_tiles_are_row_major_with_edge_flags() -> None:
    grid = TileGrid(height=70, width=100, size=32, overlap=8)
    tiles = list(grid)

    assert len(tiles) == len(grid) == len(grid.rows) * len(grid.cols)
    assert [t.number for t in tiles] == list(range(len(tiles)))
    assert [(t.row, t.col) for t in tiles] == sorted((t.row, t.col) for t in tiles)
    assert all(t.height == 32 and t.width == 32 for t in tiles)
    assert tiles[0].top and tiles[0].left and not tiles[0].right
    assert tiles[-1].bottom and tiles[-1].right and tiles[-1].col + 32 == 100

    small = list(TileGrid(height=20, width=50, size=32, overlap=8))
    assert [(t.row, t.height) for t in small] == [(0, 20), (0, 20)]


def test_blend_profiles_are_a_partition_of_unity() -> None:
    size, overlap = 32, 16
    left = axis_profile(size, overlap, start_edge=True, end_edge=False)
    right = axis_profile(size, overlap, start_edge=False, end_edge=True)
    stride = size - overlap
    # Where two neighbours overlap, their weights add to one.
    np.testing.assert_allclose(left[stride:] + right[:overlap], 1.0, atol=1e-6)
    assert left[: size - overlap].min() == 1.0, 'a scene edge is not faded'
    margin = overlap // 4
    assert (left[-margin:] == 0).all() and (right[:margin] == 0).all()
    assert np.all(np.diff(right[:overlap]) >= 0), 'the ramp rises smoothly'


def test_blend_weights_of_a_lone_window_are_one() -> None:
    (tile,) = TileGrid(height=10, width=10, size=16, overlap=4)
    assert (blend_weights(16, 4, tile) == 1).all()


def _tiled_logits(
    model: torch.nn.Module, image: torch.Tensor, size: int, overlap: int
) -> torch.Tensor:
    """Blend a model's window logits through the strip accumulator."""
    _, height, width = image.shape
    strip = StripAccumulator(3, height, width, size)
    out = torch.full((3, height, width), float('nan'))

    def store(rows: FinishedRows) -> None:
        out[:, rows.row : rows.row + rows.height] = rows.logits()
        assert rows.valid().all()

    for tile in TileGrid(height, width, size, overlap):
        window = torch.zeros(3, size, size)
        window[:, : tile.height, : tile.width] = image[
            :, tile.row : tile.row + tile.height, tile.col : tile.col + tile.width
        ]
        valid = torch.zeros(size, size, dtype=torch.bool)
        valid[: tile.height, : tile.width] = True
        for rows in strip.advance(tile.row):
            store(rows)
        weights = torch.from_numpy(blend_weights(size, overlap, tile))
        with torch.no_grad():
            logits = model(window[None])[0]
        strip.add(tile, logits, weights, valid)
    for rows in strip.advance(height):
        store(rows)
    return out


@pytest.mark.parametrize(
    ('height', 'width', 'size', 'overlap'),
    [
        (80, 80, 32, 8),  # (80 - 32) % 24 == 0: the grid divides the scene
        (77, 101, 32, 8),  # it does not: the last windows are moved back
        (90, 61, 40, 12),
        (20, 50, 32, 8),  # smaller than a window in one direction: padded
    ],
)
def test_tiled_logits_equal_the_whole_image(
    height: int, width: int, size: int, overlap: int
) -> None:
    model = ConvNet().eval()
    image = torch.randn(3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(image[None])[0]

    tiled = _tiled_logits(model, image, size, overlap)

    # Overlap >= 4 x the receptive-field radius (2): blended logits only come from
    # pixels that saw their whole receptive field, so they match away from the
    # scene border. Windows end at the scene edge, where the convolutions pad as
    # they do on the whole image: they match there too, except where a window
    # was padded (zero input is not zero padding of every layer).
    padded = height < size or width < size
    border = 2 if padded else 0
    inner = (slice(None), slice(border, height - border), slice(border, width - border))
    torch.testing.assert_close(tiled[inner], whole[inner], atol=1e-5, rtol=1e-5)


def test_a_too_small_overlap_shows_seams() -> None:
    model = ConvNet().eval()
    image = torch.randn(3, 80, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(image[None])[0]
    tiled = _tiled_logits(model, image, 32, 4)  # margin 1 < radius 2
    assert (tiled - whole).abs().max() > 1e-3


def test_strip_memory_is_bounded_by_window_rows_times_width() -> None:
    small = StripAccumulator(channels=4, height=2_000, width=3_000, size=64)
    huge = StripAccumulator(channels=4, height=2_000_000, width=3_000, size=64)

    expected = (4 + 1) * 64 * 3_000 * 4  # float sums of 4 classes and of weights
    assert small.nbytes == huge.nbytes == expected, 'the scene height does not count'


def test_strip_refuses_windows_out_of_order() -> None:
    strip = StripAccumulator(1, 100, 100, 32)
    tiles = list(TileGrid(100, 100, 32, 8))
    list(strip.advance(tiles[-1].row))
    with pytest.raises(ValueError, match='outside the strip'):
        strip.add(
            tiles[0],
            torch.zeros(1, 32, 32),
            torch.ones(32, 32),
            torch.ones(32, 32, dtype=bool),
        )


def test_cell_tiles_cover_cells_with_windows_inside_the_scene() -> None:
    tiles = cell_tiles(height=70, width=100, size=32)

    assert len(tiles) == 3 * 4
    last = tiles[-1]
    assert last.number == 11 and (last.row, last.col) == (70 - 32, 100 - 32)
    assert all(t.height == 32 and t.width == 32 for t in tiles)
    (lone,) = cell_tiles(height=10, width=20, size=32)
    assert (lone.row, lone.col, lone.height, lone.width) == (0, 0, 10, 20)


@pytest.mark.parametrize(
    ('tile', 'patch', 'height', 'width', 'max_tokens', 'expected'),
    [
        (64, 16, 900, 900, 1024, [64, 128, 192, 256, 384, 512]),
        (64, 16, 300, 200, 1024, [64, 128, 192]),  # windows fit in the scene
        (64, 16, 100, 100, 1024, [64, 96]),  # 2 x 64 > the scene: its side
        (48, 16, 900, 900, 256, [48, 96, 144, 192, 256]),  # 16 x 16 patches at most
        (40, 8, 1000, 1000, 64, [40, 64]),  # the largest size is a candidate
        (64, 16, 50, 60, 1024, [64]),
    ],
)
def test_tile_candidates_stay_on_the_patch_grid_and_inside_the_scene(
    tile: int, patch: int, height: int, width: int, max_tokens: int, expected: list[int]
) -> None:
    sizes = tile_candidates(tile, patch, 16, height, width, max_tokens)

    assert sizes == expected
    assert all(s % patch == 0 for s in sizes[1:])
    assert sizes == sorted(set(sizes))


def test_a_batch_of_windows_adds_as_its_windows_one_by_one() -> None:
    # add_batch (weights times masks for the batch, one fused multiply-add per
    # window into logits and weight sums, issue 16) gives the same bits as add.
    height, width, size, overlap = 77, 101, 32, 8
    tiles = list(TileGrid(height, width, size, overlap))
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(len(tiles), 3, size, size, generator=generator)
    valid = torch.rand(len(tiles), size, size, generator=generator) > 0.2
    valid[3] = False  # a window without valid pixels
    weights = torch.stack(
        [torch.from_numpy(blend_weights(size, overlap, t)) for t in tiles]
    )

    def finished(rows: FinishedRows) -> tuple[int, torch.Tensor, torch.Tensor]:
        return rows.row, rows.logits().clone(), rows.valid().clone()

    one = StripAccumulator(3, height, width, size)
    by_window = []
    for i, tile in enumerate(tiles):
        by_window += [finished(r) for r in one.advance(tile.row)]
        one.add(tile, logits[i], weights[i], valid[i])
    by_window += [finished(r) for r in one.advance(height)]

    batched = StripAccumulator(3, height, width, size)
    by_batch = []
    for start in range(0, len(tiles), 5):  # batches straddle rows of windows
        part = slice(start, start + 5)
        rows = batched.add_batch(tiles[part], logits[part], weights[part] * valid[part])
        by_batch += [finished(r) for r in rows]
    by_batch += [finished(r) for r in batched.advance(height)]

    assert [r[0] for r in by_batch] == [r[0] for r in by_window]
    for (_, a, a_valid), (_, b, b_valid) in zip(by_window, by_batch, strict=True):
        assert torch.equal(a, b) and torch.equal(a_valid, b_valid)
    masks = torch.cat([r[2] for r in by_batch])
    assert masks.any() and not masks.all(), 'invalid pixels stay invalid'

    # A strip of several rows of windows finishes them together, the same bits.
    tall = StripAccumulator(3, height, width, size, rows=2 * size + 5)
    by_tall = []
    for start in range(0, len(tiles), 5):
        part = slice(start, start + 5)
        rows = tall.add_batch(tiles[part], logits[part], weights[part] * valid[part])
        by_tall += [finished(r) for r in rows]
    by_tall += [finished(r) for r in tall.advance(height)]
    assert len(by_tall) < len(by_window)
    assert by_tall[0][0] == 0
    for part in (1, 2):
        assert torch.equal(
            torch.cat([r[part] for r in by_tall], dim=-2),
            torch.cat([r[part] for r in by_window], dim=-2),
        )


def test_finished_rows_are_valid_where_a_valid_pixel_got_weight() -> None:
    size = 16
    (tile,) = TileGrid(10, 12, size, 4)  # one window, padded
    valid = torch.zeros(size, size, dtype=torch.bool)
    valid[2:5, 3:9] = True
    valid[12:, 12:] = True  # padding: outside the scene, never written
    strip = StripAccumulator(2, 10, 12, size)
    strip.add(tile, torch.randn(2, size, size), torch.ones(size, size), valid)
    rows = next(strip.advance(10))  # views valid until the generator resumes
    assert torch.equal(rows.valid(), valid[:10, :12])
    assert (rows.logits()[:, ~valid[:10, :12]] == 0).all()
