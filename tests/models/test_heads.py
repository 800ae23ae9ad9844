from collections.abc import Iterator

import pytest
import torch

from dspt_geo.models import BlockPyramid, SimpleFeaturePyramid, UperNetHead


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The CPU is shared: one thread is faster than two fighting for it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(('h', 'w'), [(4, 6), (5, 7)])
def test_block_pyramid_rescales_by_4_2_1_half(h: int, w: int) -> None:
    neck = BlockPyramid(32)
    levels = neck([torch.randn(2, 32, h, w) for _ in range(4)])
    assert [tuple(x.shape) for x in levels] == [
        (2, 32, 4 * h, 4 * w),
        (2, 32, 2 * h, 2 * w),
        (2, 32, h, w),
        (2, 32, h // 2, w // 2),
    ]
    with pytest.raises(ValueError, match='4 feature maps'):
        neck([torch.randn(2, 32, h, w)] * 3)


@pytest.mark.parametrize(('h', 'w'), [(4, 6), (5, 7)])
def test_simple_feature_pyramid_p2_to_p6(h: int, w: int) -> None:
    pyramid = SimpleFeaturePyramid(32, out_channels=16)
    assert pyramid.level_names == ('p2', 'p3', 'p4', 'p5', 'p6')
    levels = pyramid(torch.randn(2, 32, h, w))
    p5 = (h // 2, w // 2)
    assert [tuple(x.shape[-2:]) for x in levels] == [
        (4 * h, 4 * w),
        (2 * h, 2 * w),
        (h, w),
        p5,
        ((p5[0] + 1) // 2, (p5[1] + 1) // 2),
    ]
    assert all(x.shape[:2] == (2, 16) for x in levels)
    # Channel LayerNorm after the last convolution of every stage.
    assert all(x.mean(dim=1).abs().max() < 1e-4 for x in levels[:4])
    without = SimpleFeaturePyramid(32, out_channels=16, top_block=False)
    assert len(without(torch.randn(1, 32, h, w))) == 4


def test_simple_feature_pyramid_needs_width_divisible_by_4() -> None:
    with pytest.raises(ValueError, match='divisible by 4'):
        SimpleFeaturePyramid(30)


def test_upernet_returns_logits_at_the_finest_level() -> None:
    head = UperNetHead([8, 12, 16, 20], channels=16, num_classes=5)
    sizes = [(16, 24), (8, 12), (4, 6), (2, 3)]
    features = [
        torch.randn(2, c, *s) for c, s in zip([8, 12, 16, 20], sizes, strict=True)
    ]
    logits = head(features)
    assert logits.shape == (2, 5, 16, 24)
    logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
