import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dspt_geo.models import (
    CHECKPOINT_BANDS,
    EncoderSpec,
    MaskedAutoencoder,
    SensorEncoder,
    build_encoder,
    create_encoder,
    save_model_file,
)

MakeMAE = Callable[..., MaskedAutoencoder]

#: A 4-block ViT on 8-pixel patches, small enough for CPU tests.
MODEL = 'vit_tiny_patch16_224'
TINY = {
    'model_args': {'depth': 4, 'embed_dim': 32, 'num_heads': 2},
    'image_size': 32,
    'patch_size': 8,
}
RGBN = ['red', 'green', 'blue', 'nir']


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The CPU is shared: one thread is faster than two fighting for it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_encoder(in_chans: int = 3, **kwargs: object) -> SensorEncoder:
    torch.manual_seed(0)
    encoder, _ = build_encoder(MODEL, in_chans, **{**TINY, **kwargs})  # type: ignore[arg-type]
    return encoder


@pytest.mark.parametrize(
    ('in_chans', 'size'), [(1, (32, 32)), (3, (32, 48)), (4, (64, 40)), (13, (40, 56))]
)
def test_token_shapes(in_chans: int, size: tuple[int, int]) -> None:
    encoder = make_encoder(in_chans)
    tokens = encoder(torch.randn(2, in_chans, *size))
    assert tokens.shape == (2, 1 + (size[0] // 8) * (size[1] // 8), 32)
    assert torch.isfinite(tokens).all()
    assert (encoder.patch_size, encoder.embed_dim, encoder.num_layers) == (8, 32, 4)


def test_same_tokens_as_the_autoencoder(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 4, 'sar': 2}, encoder={'depth': 4}).eval()
    encoder = SensorEncoder.from_mae(mae, 'sar').eval()
    images = torch.randn(2, 2, 32, 48)
    assert torch.equal(encoder(images), mae.forward_features(images, 'sar'))


def test_intermediates_are_block_outputs_as_maps() -> None:
    encoder = make_encoder(4).eval()
    images = torch.randn(2, 4, 40, 56)
    maps = encoder.forward_intermediates(images, [3, 0, -1, 1])
    assert [m.shape for m in maps] == [(2, 32, 5, 7)] * 4
    assert torch.equal(maps[0], maps[2])
    # The normalised last map holds the patch tokens of forward(), row by row.
    (last,) = encoder.forward_intermediates(images, [-1], norm=True)
    tokens = encoder(images)[:, 1:]
    torch.testing.assert_close(last.flatten(2).transpose(1, 2), tokens)
    # Without the norm the maps differ from it.
    assert not torch.allclose(maps[0].flatten(2).transpose(1, 2), tokens)


@pytest.mark.parametrize('indices', [[], [4], [-5]])
def test_intermediates_reject_bad_indices(indices: list[int]) -> None:
    with pytest.raises(ValueError, match='block indices'):
        make_encoder().forward_intermediates(torch.randn(1, 3, 32, 32), indices)


@pytest.mark.parametrize(
    ('shape', 'match'),
    [((1, 4, 32, 32), r'\(B, 3, H, W\)'), ((1, 3, 36, 32), 'multiple of the patch')],
)
def test_rejects_images_that_do_not_fit(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_encoder(3)(torch.randn(*shape))


def test_from_mae_shares_the_trained_weights(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 4, 'sar': 2}, encoder={'depth': 4})
    encoder = SensorEncoder.from_mae(mae, 'opt')
    with torch.no_grad():
        mae.encoder.blocks[2].mlp.fc1.weight.fill_(0.25)
        mae.patch_embed['opt'].proj.bias.fill_(-1.5)
        mae.encoder.cls_token.fill_(3.0)
        mae.encoder.norm.weight.fill_(2.0)
    state = encoder.state_dict()
    assert torch.equal(state['blocks.2.mlp.fc1.weight'], torch.full((128, 32), 0.25))
    assert torch.equal(state['patch_embed.proj.bias'], torch.full((32,), -1.5))
    assert torch.equal(state['cls_token'], torch.full((1, 1, 32), 3.0))
    assert torch.equal(state['norm.weight'], torch.full((32,), 2.0))
    assert encoder.in_chans == 4
    # Nothing of the decoder or of the other group's stem is in the encoder.
    assert not any(key.startswith(('decoder', 'mask_token')) for key in state)
    assert state['patch_embed.proj.weight'].shape == (32, 4, 8, 8)


def test_from_mae_checks_group_and_spec(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 4})
    with pytest.raises(ValueError, match='unknown sensor group'):
        SensorEncoder.from_mae(mae, 'sar')
    spec = EncoderSpec(MODEL, in_chans=3, image_size=32, patch_size=8, sensor='opt')
    with pytest.raises(ValueError, match='does not fit'):
        SensorEncoder.from_mae(mae, 'opt', spec=spec)


def test_layer_ids_cover_every_parameter() -> None:
    encoder = make_encoder()
    ids = {name: encoder.layer_id(name) for name, _ in encoder.named_parameters()}
    assert ids['cls_token'] == ids['patch_embed.proj.weight'] == 0
    assert ids['norm.weight'] == ids['norm.bias'] == encoder.num_layers + 1 == 5
    blocks = [
        (int(name.split('.')[1]), i) for name, i in ids.items() if 'blocks.' in name
    ]
    assert all(i == block + 1 for block, i in blocks)
    assert sorted(set(ids.values())) == list(range(6))
    with pytest.raises(ValueError, match='not a parameter name'):
        encoder.layer_id('blocks.9.norm1.weight')


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    images = torch.randn(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        encoder = make_encoder()
        encoder.set_grad_checkpointing(enable)
        encoder(images).square().mean().backward()
        grads.append(encoder.blocks[0].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_drop_path_from_the_rate() -> None:
    encoder = make_encoder(drop_path_rate=0.2)
    assert encoder.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert encoder.spec is not None and encoder.spec.drop_path_rate == 0.2


def test_timm_rgb_file_into_four_bands(tmp_path: Path) -> None:
    torch.manual_seed(1)
    vit = create_encoder(
        MODEL, in_chans=3, img_size=32, patch_size=8, **TINY['model_args']
    )  # type: ignore[arg-type]
    state = {key: value.contiguous() for key, value in vit.state_dict().items()}
    path = tmp_path / 'timm_rgb.safetensors'
    save_file(state, str(path))

    encoder, report = build_encoder(MODEL, 4, bands=RGBN, init=path, **TINY)  # type: ignore[arg-type]
    loaded = encoder.state_dict()
    for key in [
        'cls_token',
        'blocks.0.attn.qkv.weight',
        'blocks.3.mlp.fc2.bias',
        'norm.weight',
    ]:
        assert torch.equal(loaded[key], state[key]), key
    stem, source = loaded['patch_embed.proj.weight'], state['patch_embed.proj.weight']
    assert torch.equal(stem[:, :3], source)
    torch.testing.assert_close(stem[:, 3], source.mean(dim=1))
    assert report.format == 'vit'
    assert report.missing == []
    assert set(report.loaded) == set(loaded)


def test_dspt_geo_file_gives_the_best_fitting_group(
    tmp_path: Path, make_mae: MakeMAE
) -> None:
    s2 = list(CHECKPOINT_BANDS[13])
    mae = make_mae({'s2': 13, 's1': 2}, seed=3, encoder={'depth': 4})
    path = tmp_path / 'pretrained.safetensors'
    sensors = {
        's2': {'in_chans': 13, 'bands': s2},
        's1': {'in_chans': 2, 'bands': ['VV', 'VH']},
    }
    save_model_file(path, mae.state_dict(), {'sensors': sensors})
    stems = {group: mae.patch_embed[group].proj.weight for group in ('s2', 's1')}

    # A new group name: the stem whose bands match by name (the decoder of the
    # file differs from the throw-away one and is matched on the way).
    bands = ['B02', 'B03', 'B04', 'B08']
    encoder, report = build_encoder(
        MODEL,
        4,
        sensor='optical',
        bands=bands,
        init=path,
        **TINY,  # type: ignore[arg-type]
    )
    weight = encoder.state_dict()['patch_embed.proj.weight']
    assert torch.equal(weight, stems['s2'][:, [s2.index(band) for band in bands]])
    assert torch.equal(
        encoder.state_dict()['blocks.1.attn.proj.weight'],
        mae.state_dict()['encoder.blocks.1.attn.proj.weight'],
    )
    assert report.format == 'dspt-geo' and report.missing == []
    assert any("(from 's2')" in line for line in report.adapted)

    # The same group name takes that group's stem.
    encoder, _ = build_encoder(MODEL, 2, sensor='s1', init=path, **TINY)  # type: ignore[arg-type]
    assert torch.equal(encoder.state_dict()['patch_embed.proj.weight'], stems['s1'])


def test_spec_round_trip_rebuilds_the_architecture() -> None:
    encoder = make_encoder(4, sensor='opt', bands=RGBN, drop_path_rate=0.1)
    assert encoder.spec is not None
    data = json.loads(json.dumps(encoder.spec.to_dict()))
    assert data['bands'] == RGBN and data['sensor'] == 'opt'
    spec = EncoderSpec.from_dict(data)
    assert spec == encoder.spec
    rebuilt = SensorEncoder.from_spec(spec)
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    images = torch.randn(1, 4, 32, 40)
    assert torch.equal(rebuilt.eval()(images), encoder.eval()(images))
    with pytest.raises(ValueError, match='unknown keys'):
        EncoderSpec.from_dict({**data, 'depth': 4})


def test_learned_pos_embed_survives_the_spec_round_trip(tmp_path: Path) -> None:
    # A supervised timm ViT learned its position embedding: the fine-tuning encoder
    # keeps it, and a model file rebuilt from its spec (prediction) does too.
    torch.manual_seed(2)
    vit = create_encoder(
        MODEL, in_chans=3, img_size=32, patch_size=8, **TINY['model_args']
    )  # type: ignore[arg-type]
    path = tmp_path / 'timm.safetensors'
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))

    encoder, report = build_encoder(MODEL, 3, init=path, **TINY)  # type: ignore[arg-type]
    assert encoder.spec is not None and encoder.spec.pos_embed == 'learned'
    assert 'pos_embed' in report.loaded
    assert encoder.layer_id('pos_embed') == 0
    images = torch.randn(2, 3, 32, 48)
    torch.testing.assert_close(
        encoder.eval()(images), vit.eval().forward_features(images)
    )

    spec = EncoderSpec.from_dict(json.loads(json.dumps(encoder.spec.to_dict())))
    rebuilt = SensorEncoder.from_spec(spec)
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    assert torch.equal(rebuilt.eval()(images), encoder(images))
    # Specs written before issue 11 have no pos_embed key: sin-cos.
    old = {k: v for k, v in encoder.spec.to_dict().items() if k != 'pos_embed'}
    assert EncoderSpec.from_dict(old).pos_embed == 'sincos'


def test_model_args_must_be_json() -> None:
    with pytest.raises(ValueError, match='JSON'):
        make_encoder(
            model_args={
                'depth': 4,
                'embed_dim': 32,
                'num_heads': 2,
                'act_layer': torch.nn.GELU,
            }
        )
