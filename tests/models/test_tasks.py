import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead

from dspt_geo.errors import CheckpointError
from dspt_geo.models import (
    ClassificationModel,
    DetectionModel,
    SegmentationModel,
    SensorEncoder,
    build_encoder,
    build_task_model,
    build_task_model_from_config,
    default_out_indices,
    load_model_file,
    save_model_file,
)
from dspt_geo.models.detection_glue import MULTI_BLOCK_SHARES
from dspt_geo.models.head_sizes import detection_sampling, log_head_sizes
from dspt_geo.models.segmentation import resolve_out_indices

MODEL = 'vit_tiny_patch16_224'
TINY = {
    'model_args': {'depth': 4, 'embed_dim': 32, 'num_heads': 2},
    'image_size': 32,
    'patch_size': 8,
}
#: The default heads (sized for the encoder and tile); few proposals at test time.
DETECT = {
    'detector_args': {'rpn_pre_nms_top_n_test': 200, 'rpn_post_nms_top_n_test': 100}
}
OPTIONS: dict[str, dict[str, Any]] = {'classify': {}, 'segment': {}, 'detect': DETECT}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The CPU is shared: one thread is faster than two fighting for it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_encoder(in_chans: int = 3, **kwargs: Any) -> SensorEncoder:
    torch.manual_seed(0)
    encoder, _ = build_encoder(MODEL, in_chans, **{**TINY, **kwargs})
    return encoder


def make_model(
    task: str,
    in_chans: int = 3,
    num_classes: int = 3,
    *,
    drop_path_rate: float = 0.1,
    **options: Any,
) -> nn.Module:
    encoder = make_encoder(in_chans, sensor='opt', drop_path_rate=drop_path_rate)
    return build_task_model(task, encoder, num_classes, **{**OPTIONS[task], **options})  # type: ignore[arg-type]


def squares(
    count: int, size: int, in_chans: int = 3, seed: int = 0
) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    """Dark images with a bright square of class 1 in band 0 and one of class 2 in band 1.

    Returns the images, the masks (0 = background) and the detection targets.
    """
    generator = torch.Generator().manual_seed(seed)
    images = 0.05 * torch.randn(count, in_chans, size, size, generator=generator)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    targets = []
    for i in range(count):
        boxes = []
        for label in (1, 2):
            side = int(torch.randint(size // 4, size // 2, (1,), generator=generator))
            row, col = torch.randint(0, size - side, (2,), generator=generator).tolist()
            images[i, label - 1, row : row + side, col : col + side] += 1.0
            masks[i, row : row + side, col : col + side] = label
            boxes.append([col, row, col + side, row + side])
        targets.append(
            {
                'boxes': torch.tensor(boxes, dtype=torch.float32),
                'labels': torch.tensor([1, 2]),
            }
        )
    return images, masks, targets


def test_default_out_indices_follow_beit() -> None:
    assert default_out_indices(12) == [3, 5, 7, 11]
    assert default_out_indices(24) == [7, 11, 15, 23]
    assert default_out_indices(4) == [0, 1, 2, 3]


@pytest.mark.parametrize('pool', ['mean', 'cls'])
@pytest.mark.parametrize(('in_chans', 'size'), [(3, (32, 48)), (13, (40, 32))])
def test_classification_shapes(pool: str, in_chans: int, size: tuple[int, int]) -> None:
    model = make_model('classify', in_chans, num_classes=5, pool=pool)
    assert isinstance(model, ClassificationModel)
    logits = model(torch.randn(2, in_chans, *size))
    assert logits.shape == (2, 5)
    assert model.forward_features(torch.randn(2, in_chans, *size)).shape == (2, 32)


@pytest.mark.parametrize(('in_chans', 'size'), [(4, (32, 48)), (1, (64, 40))])
def test_segmentation_shapes(in_chans: int, size: tuple[int, int]) -> None:
    model = make_model('segment', in_chans, num_classes=6)
    assert isinstance(model, SegmentationModel)
    assert model.out_indices == [0, 1, 2, 3]
    logits = model(torch.randn(2, in_chans, *size))
    assert logits.shape == (2, 6, *size)


@pytest.mark.parametrize('task', ['classify', 'segment', 'detect'])
def test_every_parameter_gets_a_gradient(task: str) -> None:
    model = make_model(task, in_chans=4).train()
    images, masks, targets = squares(2, 32, in_chans=4)
    match task:
        case 'classify':
            loss = F.cross_entropy(model(images), torch.tensor([0, 2]))
        case 'segment':
            loss = F.cross_entropy(model(images), masks)
        case _:
            loss = sum(model(images, targets).values())
    assert torch.isfinite(loss)
    loss.backward()
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert [name for name, p in trained.items() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in trained.values())


@pytest.mark.parametrize('task', ['classify', 'segment', 'detect'])
def test_layer_ids_for_layer_decay(task: str) -> None:
    model = make_model(task)
    ids = {name: model.layer_id(name) for name, _ in model.named_parameters()}  # type: ignore[operator]
    assert min(ids.values()) == 0 and max(ids.values()) == model.num_layers + 1 == 5
    encoder = [name for name in ids if '.blocks.' in f'.{name}']
    assert encoder and all(
        ids[name] == int(name.split('blocks.')[1].split('.')[0]) + 1 for name in encoder
    )
    heads = [name for name in ids if 'encoder.' not in name]
    assert heads and all(ids[name] == 5 for name in heads)


def test_classification_overfits_eight_samples() -> None:
    model = make_model('classify', num_classes=4)
    torch.manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = F.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert F.cross_entropy(logits, labels) < 0.2
    assert torch.equal(logits.argmax(dim=1), labels)


def test_segmentation_learns_simple_shapes() -> None:
    model = make_model('segment', in_chans=4, drop_path_rate=0.0, dropout=0.0)
    images, masks, _ = squares(4, 32, in_chans=4)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(images), masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0]
    model.eval()
    with torch.no_grad():
        pred = model(images).argmax(dim=1)
    background = masks == 0
    assert (pred == masks).float().mean() > background.float().mean() + 0.1
    assert (pred == masks)[~background].float().mean() > 0.4


def test_detection_loss_decreases_on_bright_squares() -> None:
    model = make_model('detect', num_classes=2, drop_path_rate=0.0)
    images, _, targets = squares(2, 48)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses, objectness = [], []
    for _ in range(30):
        parts = model(images, targets)
        loss = sum(parts.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        objectness.append(parts['loss_objectness'].item())
    # The RPN learns first; as its proposals improve, more of them are positives
    # and the box-head losses rise for a while, so the sum falls less quickly.
    assert sum(losses[-5:]) / 5 < 0.85 * losses[0]
    assert sum(objectness[-5:]) / 5 < 0.3 * objectness[0]


@pytest.mark.parametrize(('in_chans', 'size'), [(4, (32, 48)), (13, (48, 40))])
def test_detection_eval_gives_boxes_inside_the_image(
    in_chans: int, size: tuple[int, int]
) -> None:
    model = make_model(
        'detect', in_chans, num_classes=3, score_thresh=0.0, detections_per_image=20
    )
    assert isinstance(model, DetectionModel)
    model.eval()
    with torch.no_grad():
        detections = model(torch.randn(2, in_chans, *size))
    assert len(detections) == 2
    height, width = size
    for found in detections:
        assert set(found) == {'boxes', 'labels', 'scores'}
        boxes, labels = found['boxes'], found['labels']
        assert 0 < len(boxes) <= 20
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert labels.min() >= 1 and labels.max() <= 3
        assert ((found['scores'] >= 0) & (found['scores'] <= 1)).all()


def test_detection_trains_on_tiles_without_objects() -> None:
    model = make_model('detect').train()
    images, _, targets = squares(2, 32)
    targets[1] = {
        'boxes': torch.zeros(0, 4),
        'labels': torch.zeros(0, dtype=torch.long),
    }
    losses = model(images, targets)
    assert all(torch.isfinite(loss) for loss in losses.values())


def test_detection_checks_target_labels() -> None:
    model = make_model('detect', num_classes=2).train()
    images, _, targets = squares(2, 32)
    targets[0]['labels'] = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r'labels must be in 1\.\.2'):
        model(images, targets)


def test_detection_with_vitdet_box_head_on_request() -> None:
    model = make_model('detect', box_head='4conv1fc').train()
    images, _, targets = squares(2, 32)
    sum(model(images, targets).values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.config()['options']['box_head'] == '4conv1fc'
    assert isinstance(model.roi_heads.box_head, FastRCNNConvFCHead)


def test_default_heads_follow_the_encoder_and_tile() -> None:
    wide = make_encoder(model_args={'depth': 6, 'embed_dim': 384, 'num_heads': 6})
    for encoder, width in ((make_encoder(), 32), (wide, 64)):
        segment = build_task_model('segment', encoder, 3)
        detect = build_task_model('detect', encoder, 2)

        assert segment.config()['options']['channels'] == width
        assert segment.decode_head.classifier.in_channels == width
        options = detect.config()['options']
        assert options['out_channels'] == width
        assert options['box_head'] == '2fc'
        assert options['representation_size'] == 4 * width
        assert isinstance(detect.roi_heads.box_head, TwoMLPHead)
        assert detect.roi_heads.box_head.fc7.out_features == 4 * width
        # Training-time sampling for a 32 px tile, stored so a rebuild matches.
        assert options['detector_args'] == detection_sampling(32, 0)
        assert detect.roi_heads.fg_bg_sampler.batch_size_per_image == 8
        assert detect.rpn.fg_bg_sampler.batch_size_per_image == 32
        assert detect.rpn._post_nms_top_n['training'] == 64
        rebuilt = build_task_model_from_config(detect.config())
        assert rebuilt.config() == detect.config()


def test_given_head_sizes_win_over_the_defaults() -> None:
    encoder = make_encoder()
    model = build_task_model(
        'detect',
        encoder,
        1,
        out_channels=24,
        detector_args={'box_batch_size_per_image': 99},
    )

    options = model.config()['options']
    assert options['out_channels'] == 24 and options['representation_size'] == 96
    assert options['detector_args']['box_batch_size_per_image'] == 99
    assert options['detector_args']['rpn_batch_size_per_image'] == 32
    assert build_task_model('segment', encoder, 3, channels=512).channels == 512


@pytest.mark.parametrize('task', ['segment', 'detect'])
def test_pyramid_needs_two_patches(task: str) -> None:
    model = make_model(task).eval()
    with pytest.raises(ValueError, match='at least 16 pixels'):
        model(torch.randn(1, 3, 8, 32))


def test_detection_takes_tiles_as_they_are() -> None:
    """No normalisation, no resizing: what goes in is what the backbone sees."""
    model = make_model('detect', in_chans=13).eval()
    images = 1000 + torch.randn(1, 13, 40, 56)
    image_list, _ = model.transform(list(images))
    assert torch.equal(image_list.tensors, images)
    assert image_list.image_sizes == [(40, 56)]


def outputs(model: nn.Module, images: Tensor) -> list[Tensor]:
    with torch.no_grad():
        out = model(images)
    if isinstance(out, Tensor):
        return [out]
    return [value for found in out for value in found.values()]


@pytest.mark.parametrize('task', ['classify', 'segment', 'detect'])
def test_config_round_trip_reproduces_the_outputs(task: str, tmp_path: Path) -> None:
    model = make_model(
        task,
        in_chans=4,
        num_classes=3,
        **({'score_thresh': 0.0} if task == 'detect' else {}),
    )
    # Move the weights away from their initialisation (batch-norm statistics too).
    images, _, targets = squares(2, 32, in_chans=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.train()(images, targets) if task == 'detect' else model.train()(images)
    config = model.config()  # type: ignore[operator]
    assert config['task'] == task and config['num_classes'] == 3
    assert config['encoder']['sensor'] == 'opt' and config['encoder']['in_chans'] == 4
    path = tmp_path / 'fine-tuned.safetensors'
    save_model_file(path, model.state_dict(), {'task_model': config})

    state, metadata = load_model_file(path)
    rebuilt = build_task_model_from_config(
        json.loads(json.dumps(metadata['task_model']))
    )
    assert type(rebuilt) is type(model)
    rebuilt.load_state_dict(state, strict=True)
    assert rebuilt.config() == config
    model.eval()
    rebuilt.eval()
    test = torch.randn(2, 4, 32, 40)
    expected, got = outputs(model, test), outputs(rebuilt, test)
    assert len(expected) == len(got) > 0
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_classification_pools_into_a_fresh_fc_norm() -> None:
    model = make_model('classify').eval()  # no drop path
    norm = model.encoder.norm
    with torch.no_grad():
        norm.weight.fill_(3.0)  # a pre-trained final norm, left out
    images = torch.randn(2, 3, 32, 32)
    tokens = model.encoder(images, norm=False)[:, 1:].mean(dim=1)

    expected = F.layer_norm(tokens, (tokens.shape[-1],), eps=1e-6)
    torch.testing.assert_close(model.forward_features(images), expected)
    assert not norm.weight.requires_grad  # unused: frozen, so DDP finds no unused one
    assert model.config()['options']['fc_norm'] is True  # type: ignore[operator]
    cls = make_model('classify', pool='cls')
    assert cls.fc_norm is None and cls.encoder.norm.weight.requires_grad


def test_version_1_classification_configs_reuse_the_encoder_norm() -> None:
    old = make_model('classify', fc_norm=False)
    config = old.config()  # type: ignore[operator]
    del config['options']['fc_norm']
    state = old.state_dict()
    assert not any(key.startswith('fc_norm') for key in state)

    rebuilt = build_task_model_from_config({**config, 'config_version': 1})

    rebuilt.load_state_dict(state, strict=True)
    assert rebuilt.fc_norm is None
    with pytest.raises(RuntimeError, match='fc_norm'):
        build_task_model_from_config(config).load_state_dict(state, strict=True)


def test_segmentation_neck_narrows_at_each_upsampling() -> None:
    narrow, full = make_model('segment'), make_model('segment', neck='full')
    dim = narrow.encoder.embed_dim
    assert narrow.neck.out_channels == [dim // 4, dim // 2, dim, dim]
    assert full.neck.out_channels == [dim] * 4
    images = torch.randn(2, 3, 32, 32)
    for model in (narrow, full):
        levels = model.eval().forward_features(images)
        assert [x.shape[1] for x in levels] == model.neck.out_channels
        assert [x.shape[-1] for x in levels] == [16, 8, 4, 2]  # patch 8: p/4 .. 2p
        assert model(images).shape == (2, 3, 32, 32)
        aux = model.auxiliary_head()(levels[model.AUX_LEVEL])
        assert aux.shape[:2] == (2, 3)
    assert narrow.config()['options']['neck'] == 'narrow'  # type: ignore[operator]
    weights = [sum(p.numel() for p in m.neck.parameters()) for m in (narrow, full)]
    assert weights[0] < 0.4 * weights[1]  # 4.5 D^2 against 12 D^2
    with pytest.raises(ValueError, match='neck'):
        make_model('segment', neck='wide')


def test_version_2_segmentation_configs_keep_the_full_width_neck() -> None:
    old = make_model('segment', neck='full')
    config = old.config()  # type: ignore[operator]
    del config['options']['neck']
    state = old.state_dict()

    rebuilt = build_task_model_from_config({**config, 'config_version': 2})

    rebuilt.load_state_dict(state, strict=True)
    assert rebuilt.neck_kind == 'full'
    with pytest.raises(RuntimeError, match='neck'):
        build_task_model_from_config(config).load_state_dict(state, strict=True)


def test_detection_config_keeps_changed_thresholds() -> None:
    model = make_model('detect')
    model.roi_heads.score_thresh = 0.3
    options = model.config()['options']  # type: ignore[operator]
    assert options['score_thresh'] == 0.3
    assert options['anchor_sizes'] == [16.0, 32.0, 64.0, 128.0, 256.0]


def test_bad_tasks_and_options() -> None:
    encoder = make_encoder()
    with pytest.raises(ValueError, match='unknown task'):
        build_task_model('count', encoder, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='invalid options'):
        build_task_model('classify', encoder, 3, channels=8)
    with pytest.raises(ValueError, match="pool must be 'mean' or 'cls'"):
        build_task_model('classify', encoder, 3, pool='max')
    with pytest.raises(ValueError, match='out_indices'):
        build_task_model('segment', encoder, 3, out_indices=[0, 1, 9, 3])
    with pytest.raises(ValueError, match='detector_args may not set'):
        build_task_model('detect', encoder, 3, detector_args={'num_classes': 4})
    with pytest.raises(ValueError, match='num_classes'):
        build_task_model('segment', encoder, 0)


def test_bad_configs_are_checkpoint_errors() -> None:
    config = make_model('classify').config()  # type: ignore[operator]
    with pytest.raises(CheckpointError, match='update dspt-geo'):
        build_task_model_from_config({**config, 'config_version': 99})
    with pytest.raises(CheckpointError, match='lacks'):
        build_task_model_from_config(
            {k: v for k, v in config.items() if k != 'options'}
        )
    with pytest.raises(CheckpointError, match='unknown task'):
        build_task_model_from_config({**config, 'task': 'count'})
    with pytest.raises(CheckpointError, match='unknown keys'):
        build_task_model_from_config(
            {**config, 'encoder': {**config['encoder'], 'x': 1}}
        )


def test_config_needs_an_encoder_spec(make_mae: Any) -> None:
    encoder = SensorEncoder.from_mae(make_mae({'opt': 3}), 'opt')
    with pytest.raises(ValueError, match='no spec'):
        build_task_model('classify', encoder, 2).config()


def test_detection_inference_limits_cap_and_restore_the_model_settings() -> None:
    model = make_model('detect', score_thresh=0.0).eval()
    seen: list[int] = []
    model.roi_heads.box_head.register_forward_hook(
        lambda module, args, out: seen.append(int(args[0].shape[0]))
    )
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    with torch.no_grad(), model.inference_limits(proposals=12, detections=3):
        limited = model(images)
    with torch.no_grad(), model.inference_limits(10_000, 10_000):
        model(images)  # more than the model's own: capped at them
    with torch.no_grad():
        model(images)

    assert seen[0] <= 2 * 12, 'at most 12 proposals per image reach the box head'
    assert seen[1] == seen[2] > 2 * 12, 'the model settings cap larger limits'
    assert all(len(result['boxes']) <= 3 for result in limited)
    assert model.rpn._post_nms_top_n['testing'] == 100
    assert model.roi_heads.detections_per_img == 100


def test_detection_multi_block_pyramid_builds_trains_and_round_trips(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = make_model('detect', num_classes=2, pyramid='multi', score_thresh=0.0)
    with caplog.at_level('INFO'):
        log_head_sizes(model)
    assert 'head: FPN on blocks [0, 1, 2, 3] of 32 channels' in caplog.text
    assert model.backbone.out_indices == [0, 1, 2, 3]  # 1/4, 1/2, 3/4, last of 4
    assert resolve_out_indices(None, 12, MULTI_BLOCK_SHARES) == [2, 5, 8, 11]
    images, _, targets = squares(2, 32)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    loss = sum(model.train()(images, targets).values())
    loss.backward()
    optimiser.step()

    assert torch.isfinite(loss)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    state = model.state_dict()
    assert any(k.startswith('backbone.fpn.') for k in state)
    assert not any(k.startswith('backbone.pyramid.') for k in state)
    # The shallow blocks feed the pyramid directly, so they learn from it.
    assert not torch.equal(
        state['backbone.encoder.blocks.0.mlp.fc1.weight'],
        before['backbone.encoder.blocks.0.mlp.fc1.weight'],
    )
    config = model.config()
    assert config['options']['pyramid'] == 'multi'
    assert config['options']['out_indices'] == [0, 1, 2, 3]
    rebuilt = build_task_model_from_config(json.loads(json.dumps(config)))
    rebuilt.load_state_dict(state, strict=True)
    test = torch.randn(1, 3, 32, 32)
    expected, got = outputs(model.eval(), test), outputs(rebuilt.eval(), test)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    chosen = make_model('detect', pyramid='multi', out_indices=[1, 1, 2, -1])
    assert chosen.backbone.out_indices == [1, 1, 2, 3]


def test_detection_pyramid_defaults_to_the_last_block(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = make_model('detect')
    config = model.config()

    assert config['options']['pyramid'] == 'last'
    assert 'out_indices' not in config['options']
    assert model.backbone.out_indices == [3]
    with caplog.at_level('INFO'):
        log_head_sizes(model)
    assert 'head: simple pyramid on the last block of 32 channels' in caplog.text
    assert any(k.startswith('backbone.pyramid.') for k in model.state_dict())
    # A config written before the option (no 'pyramid') rebuilds the same model.
    del config['options']['pyramid']
    rebuilt = build_task_model_from_config(config)
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    with pytest.raises(ValueError, match="pyramid must be 'last' or 'multi'"):
        make_model('detect', pyramid='wide')
    with pytest.raises(ValueError, match="out_indices needs pyramid='multi'"):
        make_model('detect', out_indices=[0, 1, 2, 3])
