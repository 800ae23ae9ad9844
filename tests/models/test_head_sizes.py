import pytest

from dspt_geo.models.head_sizes import (
    box_representation_size,
    detection_sampling,
    head_channels,
)


@pytest.mark.parametrize(
    ('embed_dim', 'depth', 'cap', 'channels'),
    [
        (192, 6, 512, 32),  # the README's CPU encoder
        (768, 12, 512, 192),  # ViT-B
        (1024, 24, 512, 360),  # ViT-L
        (1024, 24, 256, 256),  # ViT-L's detection pyramid, capped as ViTDet's
        (32, 2, 512, 32),  # never under 32
    ],
)
def test_head_width_follows_the_encoder(embed_dim, depth, cap, channels):
    assert head_channels(embed_dim, depth, cap) == channels


def test_head_width_grows_with_width_and_depth():
    widths = [head_channels(d, 12, 4096) for d in (128, 256, 512, 1024, 2048)]
    depths = [head_channels(768, n, 4096) for n in (4, 8, 12, 24, 48)]
    for sizes in (widths, depths):
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
        assert all(size % 8 == 0 for size in sizes)


def test_box_head_width():
    assert box_representation_size(40) == 160
    assert box_representation_size(32) == 128
    assert box_representation_size(256) == 1024  # the reference's
    assert box_representation_size(512) == 1024


def test_sampling_follows_objects_and_tile_area():
    small = detection_sampling(64, 0)
    assert small == {
        'box_batch_size_per_image': 8,
        'rpn_batch_size_per_image': 32,
        'rpn_post_nms_top_n_train': 64,
        'rpn_pre_nms_top_n_train': 128,
    }
    crowded = detection_sampling(64, 30)
    assert crowded['box_batch_size_per_image'] == 60  # 2 per object
    assert crowded['rpn_batch_size_per_image'] == 120  # 4 per object
    assert crowded['rpn_post_nms_top_n_train'] == 240  # 4 per sampled RoI
    # On a 1024 px tile: torchvision's values, whatever the objects.
    assert detection_sampling(1024, 1) == {
        'box_batch_size_per_image': 512,
        'rpn_batch_size_per_image': 256,
        'rpn_post_nms_top_n_train': 2000,
        'rpn_pre_nms_top_n_train': 2000,
    }
    for size in (32, 64, 224, 512, 2048):
        for objects in (0, 3, 50, 1000):
            sampling = detection_sampling(size, objects)
            assert 8 <= sampling['box_batch_size_per_image'] <= 512
            assert 32 <= sampling['rpn_batch_size_per_image'] <= 256
            assert (
                sampling['rpn_pre_nms_top_n_train']
                >= sampling['rpn_post_nms_top_n_train']
                >= min(2000, 4 * sampling['box_batch_size_per_image'])
            )
