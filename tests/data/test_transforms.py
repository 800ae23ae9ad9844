"""Batch augmentations of labelled data: masks and boxes follow the images."""

import pytest
import torch

from dspt_geo.data.transforms import flip_rotate, scale_crop


def squares(count: int, size: int, seed: int = 0):
    """Images holding one bright rectangle each, its mask and its box."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 2, size, size)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    boxes = []
    for i in range(count):
        x0, y0 = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        w, h = torch.randint(2, 8, (2,), generator=generator).tolist()
        images[i, :, y0 : y0 + h, x0 : x0 + w] = 1.0
        masks[i, y0 : y0 + h, x0 : x0 + w] = 1
        boxes.append(torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32))
    return images, masks, boxes


def box_of(mask: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return torch.tensor(
        [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32
    )


@pytest.mark.parametrize('size', [(24, 24), (16, 24)])
def test_flips_and_rotations_move_masks_and_boxes_with_the_images(size):
    images, masks, boxes = squares(64, 16)
    if size[0] != size[1]:  # not square: only flips and half turns
        images = torch.nn.functional.pad(images, (0, size[1] - 16, 0, size[0] - 16))
        masks = torch.nn.functional.pad(masks, (0, size[1] - 16, 0, size[0] - 16))
    valid = torch.ones(64, *size, dtype=torch.bool)
    valid[:, 0, 0] = False

    out, out_valid, out_masks, out_boxes = flip_rotate(
        images, valid, masks, boxes, generator=torch.Generator().manual_seed(1)
    )

    assert out.shape == images.shape and out_masks.shape == masks.shape
    corners = set()
    for i in range(64):
        assert torch.equal(out[i, 0] > 0.5, out_masks[i] == 1)
        assert torch.equal(out_boxes[i][0], box_of(out_masks[i]))
        corners.add(tuple(torch.nonzero(~out_valid[i])[0].tolist()))
    # The invalid corner pixel went to every corner: flips and turns all happened.
    assert len(corners) == 4


def test_scale_jitter_and_crops_keep_boxes_on_their_objects():
    images, _, boxes = squares(32, 32, seed=2)
    labels = [torch.tensor([3]) for _ in boxes]
    valid = torch.ones(32, 32, 32, dtype=torch.bool)

    out, out_valid, out_boxes, out_labels = scale_crop(
        images, valid, boxes, labels, generator=torch.Generator().manual_seed(0)
    )

    assert out.shape == images.shape and out_valid.shape == valid.shape
    kept = 0
    for i in range(32):
        assert len(out_boxes[i]) == len(out_labels[i]) <= 1
        if len(out_boxes[i]):
            kept += 1
            assert out_labels[i].tolist() == [3]
            box = out_boxes[i][0]
            assert ((box >= 0) & (box <= 32)).all()
            # Bilinear resampling blurs edges by at most a pixel.
            assert (box - box_of(out[i, 0] > 0.5)).abs().max() <= 1.0
        # Padding (a shrunk image) is invalid, and zero.
        assert (out[i][:, ~out_valid[i]] == 0).all()
    assert kept > 16
    assert (~out_valid).any(), 'some images shrank and were padded'
