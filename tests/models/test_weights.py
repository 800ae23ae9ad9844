import argparse
import logging
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from dspt_geo.errors import CheckpointError
from dspt_geo.models import (
    MaskedAutoencoder,
    load_init_weights,
    save_model_file,
    sincos_pos_embed_2d,
)

MakeMAE = Callable[..., MaskedAutoencoder]
MakeEncoder = Callable[..., VisionTransformer]

RGBN = ['red', 'green', 'blue', 'nir']

#: Seeded random bytes.
NOISE = random.Random(0).randbytes(2048)


class Payload:
    """Unpickling this object creates a file: the code that must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def vit_state(make_encoder: MakeEncoder) -> Callable[..., dict[str, Tensor]]:
    """A timm ViT state dict, as timm, torchgeo or MAE (encoder only) store it."""

    def make(
        in_chans: int = 3, *, mae: bool = False, **kwargs: object
    ) -> dict[str, Tensor]:
        torch.manual_seed(1)
        state = make_encoder(in_chans=in_chans, **kwargs).state_dict()
        if mae:  # MAE's encoder has fixed sin-cos position embeddings
            state['pos_embed'] = sincos_pos_embed_2d(32, 4, cls_token=True)[None]
        return state

    return make


@pytest.fixture
def mae_full_state(make_mae: MakeMAE) -> dict[str, Tensor]:
    """An official MAE ``*_full.pth`` state dict (encoder and decoder), RGB."""
    state = {}
    for key, value in make_mae({'rgb': 3}, seed=2).state_dict().items():
        key = key.removeprefix('encoder.').replace('.rgb.', '.')
        state[key] = value
    state['pos_embed'] = sincos_pos_embed_2d(32, 4, cls_token=True)[None]
    state['decoder_pos_embed'] = sincos_pos_embed_2d(16, 4, cls_token=True)[None]
    return state


def assert_encoder_loaded(model: MaskedAutoencoder, source: dict[str, Tensor]) -> None:
    state = model.state_dict()
    for key in [
        'cls_token',
        'blocks.0.attn.qkv.weight',
        'blocks.1.mlp.fc2.bias',
        'norm.weight',
    ]:
        assert torch.equal(state[f'encoder.{key}'], source[key]), key


def test_mae_encoder_only_into_four_bands(
    tmp_path: Path, make_mae: MakeMAE, vit_state: Callable[..., dict[str, Tensor]]
) -> None:
    source = vit_state(mae=True)
    path = tmp_path / 'mae_pretrain_vit_tiny.pth'
    torch.save({'model': source}, path)
    model = make_mae({'opt': 4})
    decoder_before = model.decoder_embed.weight.clone()
    report = load_init_weights(model, path, sensor_bands={'opt': RGBN})

    assert report.format == 'vit'
    assert_encoder_loaded(model, source)
    weight = model.patch_embed['opt'].proj.weight.detach()
    stem = source['patch_embed.proj.weight']
    assert torch.equal(weight[:, :3], stem)
    torch.testing.assert_close(weight[:, 3], stem.mean(dim=1))
    assert torch.equal(
        model.patch_embed['opt'].proj.bias, source['patch_embed.proj.bias']
    )
    assert torch.equal(model.decoder_embed.weight, decoder_before)

    assert 'encoder.cls_token' in report.loaded
    assert 'patch_embed.opt.proj.weight' in report.loaded
    assert {'mask_token', 'decoder_embed.weight', 'decoder_pred.opt.weight'} <= set(
        report.missing
    )
    assert report.unexpected == []
    text = '\n'.join(report.adapted)
    assert "weights found under ['model']" in text
    assert 'pos_embed: not loaded' in text
    assert 'opt: patch embedding: 3 -> 4 bands by name' in text
    assert 'nir <- mean of the checkpoint bands' in text


def test_bands_are_matched_by_name_in_any_order(
    tmp_path: Path, make_mae: MakeMAE, vit_state: Callable[..., dict[str, Tensor]]
) -> None:
    source = vit_state()
    path = tmp_path / 'rgb.pth'
    torch.save(source, path)
    model = make_mae({'opt': 4})
    load_init_weights(
        model, path, sensor_bands={'opt': ['NIR', 'Blue', 'GREEN', 'red']}
    )
    weight = model.patch_embed['opt'].proj.weight.detach()
    stem = source['patch_embed.proj.weight']
    assert torch.equal(weight[:, 1], stem[:, 2])
    assert torch.equal(weight[:, 3], stem[:, 0])
    torch.testing.assert_close(weight[:, 0], stem.mean(dim=1))


def test_sentinel2_checkpoint_with_prefix_and_aliases(
    tmp_path: Path,
    make_mae: MakeMAE,
    vit_state: Callable[..., dict[str, Tensor]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = vit_state(in_chans=13)
    path = tmp_path / 'ssl4eo_s2.safetensors'
    save_file({f'backbone.{key}': value for key, value in source.items()}, path)
    model = make_mae({'s2': 4, 'sar': 2})
    with caplog.at_level(logging.INFO, logger='dspt_geo.models.weights'):
        report = load_init_weights(
            model,
            path,
            sensor_bands={'s2': ['B04', 'green', 'b02', 'B08'], 'sar': ['VV', 'VH']},
        )
    assert report.format == 'vit'
    assert_encoder_loaded(model, source)
    stem = source['patch_embed.proj.weight']
    assert torch.equal(model.patch_embed['s2'].proj.weight, stem[:, [3, 2, 1, 7]])
    # No S2 band is VV or VH: timm's rule, tiled and scaled by 13/2.
    torch.testing.assert_close(
        model.patch_embed['sar'].proj.weight, stem[:, :2] * 13 / 2
    )
    assert "key prefix 'backbone.' removed" in report.adapted
    assert any(line.startswith('encoder.pos_embed: learned') for line in report.adapted)
    assert 's2: patch embedding: 13 -> 4 bands by name' in caplog.text


@pytest.mark.parametrize('in_chans', [1, 2, 6])
def test_unnamed_bands_follow_timm_rule(
    tmp_path: Path,
    make_mae: MakeMAE,
    vit_state: Callable[..., dict[str, Tensor]],
    in_chans: int,
) -> None:
    source = vit_state()
    path = tmp_path / 'rgb.bin'
    torch.save(source, path)
    model = make_mae({'pan': in_chans})
    report = load_init_weights(model, path)
    stem = source['patch_embed.proj.weight']
    weight = model.patch_embed['pan'].proj.weight
    if in_chans == 1:
        torch.testing.assert_close(weight, stem.sum(dim=1, keepdim=True))
        assert (
            'pan: patch embedding: 3 -> 1 band, the sum of the checkpoint bands'
            in report.adapted
        )
    else:
        torch.testing.assert_close(
            weight, stem.repeat(1, 2, 1, 1)[:, :in_chans] * 3 / in_chans
        )
        assert any(
            f'tiled and scaled by 3/{in_chans}' in line for line in report.adapted
        )
    if in_chans != 2:
        # A uniform image gets the response it gets through the checkpoint's stem.
        torch.testing.assert_close(weight.sum(dim=1), stem.sum(dim=1))


def test_mae_full_checkpoint_loads_decoder_and_heads(
    tmp_path: Path, make_mae: MakeMAE, mae_full_state: dict[str, Tensor]
) -> None:
    path = tmp_path / 'mae_pretrain_vit_tiny_full.pth'
    torch.save({'model': mae_full_state}, path)
    model = make_mae({'opt': 4})
    head_before = model.decoder_pred['opt'].weight.detach().clone()
    report = load_init_weights(model, path, sensor_bands={'opt': RGBN})

    assert report.format == 'mae'
    assert report.missing == []
    assert report.unexpected == []
    state = model.state_dict()
    for key in [
        'mask_token',
        'decoder_embed.weight',
        'decoder_blocks.0.attn.qkv.weight',
        'decoder_norm.bias',
    ]:
        assert torch.equal(state[key], mae_full_state[key]), key
    head = state['decoder_pred.opt.weight'].view(64, 4, 16)
    source = mae_full_state['decoder_pred.weight'].view(64, 3, 16)
    assert torch.equal(head[:, :3], source)
    assert torch.equal(head[:, 3], head_before.view(64, 4, 16)[:, 3])
    bias = state['decoder_pred.opt.bias'].view(64, 4)
    assert torch.equal(bias[:, :3], mae_full_state['decoder_pred.bias'].view(64, 3))
    assert (
        'opt: reconstruction head: 3 of 4 bands from the checkpoint, the others kept initialised'
        in report.adapted
    )
    assert (
        'decoder_pos_embed: not loaded, the model computes the same fixed 2-D sin-cos'
        in report.adapted
    )


@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
def test_timm_state_dict_with_classifier(
    tmp_path: Path,
    make_mae: MakeMAE,
    vit_state: Callable[..., dict[str, Tensor]],
    suffix: str,
) -> None:
    source = vit_state(num_classes=10, global_pool='avg')
    assert {'head.weight', 'fc_norm.weight'} <= source.keys()
    path = tmp_path / f'model{suffix}'
    if suffix == '.safetensors':
        save_file(source, path)
    else:
        torch.save(source, path)
    model = make_mae({'rgb': 3})
    report = load_init_weights(model, path)
    assert report.format == 'vit'
    assert set(report.unexpected) == {
        'head.weight',
        'head.bias',
        'encoder.fc_norm.weight',
        'encoder.fc_norm.bias',
    }
    # With global_pool='avg' timm has no final norm: the model keeps its own.
    assert 'encoder.norm.weight' in report.missing
    assert torch.equal(
        model.patch_embed['rgb'].proj.weight, source['patch_embed.proj.weight']
    )
    assert 'rgb: patch embedding: 3 bands copied in order' in report.adapted
    summary = str(report).splitlines()
    assert summary[0].endswith(
        f'model{suffix} (vit): {len(report.loaded)} tensors loaded'
    )
    assert any(
        line.startswith('in the file but unused: ') and 'head.weight' in line
        for line in summary
    )


def test_dspt_geo_model_file_continues_training(
    tmp_path: Path, make_mae: MakeMAE
) -> None:
    trained = make_mae({'opt': 4, 'sar': 2}, seed=3)
    path = tmp_path / 'model.safetensors'
    metadata = {
        'sensors': {
            'opt': {'in_chans': 4, 'bands': RGBN},
            'sar': {'in_chans': 2, 'bands': ['VV', 'VH']},
        }
    }
    save_model_file(path, trained.state_dict(), metadata)

    same = make_mae({'opt': 4, 'sar': 2})
    report = load_init_weights(same, path)
    assert report.format == 'dspt-geo'
    assert report.missing == [] and report.unexpected == []
    for key, value in trained.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key

    # A new group takes the stem whose bands fit best; an absent group is unused.
    grown = make_mae({'s2': 3})
    report = load_init_weights(grown, path, sensor_bands={'s2': ['B02', 'B03', 'B08']})
    opt_stem = trained.patch_embed['opt'].proj.weight
    assert torch.equal(grown.patch_embed['s2'].proj.weight, opt_stem[:, [2, 1, 3]])
    assert "s2: patch embedding (from 'opt'): 4 -> 3 bands by name" in report.adapted[0]
    assert set(report.unexpected) == {'patch_embed.sar.*', 'decoder_pred.sar.*'}


def test_lightning_checkpoint_of_the_model(tmp_path: Path, make_mae: MakeMAE) -> None:
    trained = make_mae({'opt': 4}, seed=4)
    path = tmp_path / 'last.ckpt'
    state = {f'model.{key}': value for key, value in trained.state_dict().items()}
    torch.save({'epoch': 3, 'state_dict': state}, path)
    model = make_mae({'opt': 4})
    report = load_init_weights(model, path)
    assert report.format == 'dspt-geo'
    assert report.missing == []
    assert report.adapted[:2] == [
        "weights found under ['state_dict']",
        "key prefix 'model.' removed",
    ]
    assert torch.equal(model.mask_token, trained.mask_token)


@pytest.mark.parametrize('writer', ['torch', 'pickle'])
def test_pickled_code_is_refused(
    tmp_path: Path,
    make_mae: MakeMAE,
    vit_state: Callable[..., dict[str, Tensor]],
    writer: str,
) -> None:
    marker = tmp_path / 'code_ran'
    content = {'model': vit_state(), 'args': Payload(marker)}
    path = tmp_path / 'evil.pth'
    if writer == 'torch':
        torch.save(content, path)
    else:
        path.write_bytes(pickle.dumps(content, protocol=4))
    with pytest.raises(CheckpointError, match='contains pickled code') as error:
        load_init_weights(make_mae({'rgb': 3}), path)
    assert 'safetensors' in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    'content',
    [b'', b'just some text\n', NOISE, b'\x80\x02' + NOISE, b'PK\x03\x04' + NOISE],
    ids=['empty', 'text', 'random', 'pickle-like', 'zip-like'],
)
def test_not_a_checkpoint(tmp_path: Path, make_mae: MakeMAE, content: bytes) -> None:
    path = tmp_path / 'weights.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r'weights\.pth'):
        load_init_weights(make_mae({'rgb': 3}), path)


def test_checkpoint_without_vit(tmp_path: Path, make_mae: MakeMAE) -> None:
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.ones(2, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match='holds no ViT weights'):
        load_init_weights(make_mae({'rgb': 3}), path)


def test_other_width_is_refused_with_the_shapes(
    tmp_path: Path, make_mae: MakeMAE, vit_state: Callable[..., dict[str, Tensor]]
) -> None:
    path = tmp_path / 'wide.safetensors'
    save_file(vit_state(embed_dim=64), path)
    model = make_mae({'rgb': 3})
    before = model.state_dict()['encoder.blocks.0.norm1.weight'].clone()
    with pytest.raises(
        CheckpointError,
        match=r'proj.weight: file \(64, 3, 8, 8\), model \(32, bands, 8, 8\)',
    ) as error:
        load_init_weights(model, path)
    assert 'embed_dim 64, depth 2, patch size 8' in str(error.value)
    assert torch.equal(model.state_dict()['encoder.blocks.0.norm1.weight'], before)


def test_other_depth_is_refused(
    tmp_path: Path, make_mae: MakeMAE, vit_state: Callable[..., dict[str, Tensor]]
) -> None:
    path = tmp_path / 'deep.pth'
    torch.save(vit_state(depth=3), path)
    with pytest.raises(
        CheckpointError, match=r'encoder\.blocks: file depth 3, model 2'
    ):
        load_init_weights(make_mae({'rgb': 3}), path)


def test_mismatch_names_the_fitting_model(tmp_path: Path, make_mae: MakeMAE) -> None:
    # Shapes of ViT-S/16 only, enough to be told which --model fits.
    state = {
        'cls_token': torch.zeros(1, 1, 384),
        'patch_embed.proj.weight': torch.zeros(384, 3, 16, 16),
    }
    state |= {f'blocks.{i}.norm1.weight': torch.zeros(384) for i in range(12)}
    path = tmp_path / 'vit_small.safetensors'
    save_file(state, path)
    with pytest.raises(CheckpointError, match='use --model vit_small_patch16_224'):
        load_init_weights(make_mae({'rgb': 3}), path)


def test_decoder_mismatch_names_the_decoder_settings(
    tmp_path: Path, make_mae: MakeMAE, mae_full_state: dict[str, Tensor]
) -> None:
    path = tmp_path / 'full.pth'
    torch.save({'model': mae_full_state}, path)
    with pytest.raises(CheckpointError, match='--decoder-dim 16 --decoder-depth 1'):
        load_init_weights(
            make_mae({'rgb': 3}, decoder_embed_dim=24, decoder_num_heads=2), path
        )


def test_absent_hub_name_fails_fast_offline(make_mae: MakeMAE, hf_cache: Path) -> None:
    start = time.monotonic()
    with pytest.raises(
        CheckpointError,
        match=r'not in the local Hugging Face cache .*; no network is used',
    ):
        load_init_weights(make_mae({'rgb': 3}), 'vit_base_patch16_224.mae')
    assert time.monotonic() - start < 3
    with pytest.raises(CheckpointError, match='no such weights file'):
        load_init_weights(make_mae({'rgb': 3}), 'no_such_model.pth')


def test_hub_name_from_the_local_cache(
    make_mae: MakeMAE, vit_state: Callable[..., dict[str, Tensor]], hf_cache: Path
) -> None:
    repo = hf_cache / 'models--timm--vit_tiny_patch16_224.augreg_in21k'
    snapshot = repo / 'snapshots' / ('0' * 40)
    snapshot.mkdir(parents=True)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('0' * 40)
    source = vit_state()
    save_file(source, snapshot / 'model.safetensors')
    model = make_mae({'rgb': 3})
    report = load_init_weights(model, 'vit_tiny_patch16_224.augreg_in21k')
    assert report.source == str(snapshot / 'model.safetensors')
    assert_encoder_loaded(model, source)


def test_none_keeps_the_initialisation(make_mae: MakeMAE) -> None:
    model = make_mae({'rgb': 3})
    before = {key: value.clone() for key, value in model.state_dict().items()}
    report = load_init_weights(model, 'none')
    assert report.format == 'none'
    assert report.loaded == []
    assert report.missing == list(before)
    assert 'random initialisation' in str(report)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_sensor_bands_must_fit_the_model(make_mae: MakeMAE) -> None:
    model = make_mae({'opt': 4})
    with pytest.raises(ValueError, match=r"groups \['sar'\] that the model lacks"):
        load_init_weights(model, 'none', sensor_bands={'sar': ['VV', 'VH']})
    with pytest.raises(ValueError, match="'opt' has 4 bands but sensor_bands names 3"):
        load_init_weights(model, 'none', sensor_bands={'opt': ['red', 'green', 'blue']})


# -- weights as published (issue 11) -------------------------------------------------


def test_learned_pos_embed_is_resampled_and_used(
    tmp_path: Path, make_mae: MakeMAE, make_encoder: MakeEncoder
) -> None:
    torch.manual_seed(5)
    timm_vit = make_encoder().eval()  # learned pos_embed of a 4 x 4 grid
    path = tmp_path / 'supervised.safetensors'
    save_file({k: v.contiguous() for k, v in timm_vit.state_dict().items()}, path)

    same_grid = make_mae({'rgb': 3})
    report = load_init_weights(same_grid, path)
    assert same_grid.pos_embed_type == 'learned'
    assert 'encoder.pos_embed' in report.loaded
    assert torch.equal(same_grid.encoder.pos_embed, timm_vit.pos_embed)
    # The encoder now computes what the published ViT computes, at its grid and,
    # resampled as timm resamples, at another.
    for size in (32, 48):
        images = torch.randn(2, 3, size, size)
        tokens = same_grid._embed(images, 'rgb')
        ours = same_grid._encode(tokens)
        torch.testing.assert_close(ours, timm_vit.forward_features(images))

    larger = make_mae({'rgb': 3}, encoder={'img_size': 64})
    report = load_init_weights(larger, path)
    expected = resample_abs_pos_embed(timm_vit.pos_embed, [8, 8], num_prefix_tokens=1)
    torch.testing.assert_close(larger.encoder.pos_embed, expected)
    assert any('resampled from 4x4 to 8x8' in line for line in report.adapted)


def test_sincos_pos_embed_keeps_the_fixed_embedding(
    tmp_path: Path, make_mae: MakeMAE, vit_state: Callable[..., dict[str, Tensor]]
) -> None:
    path = tmp_path / 'mae_pretrain.pth'
    torch.save({'model': vit_state(mae=True)}, path)
    model = make_mae({'rgb': 3})
    report = load_init_weights(model, path)
    assert model.pos_embed_type == 'sincos'
    assert 'encoder.pos_embed' not in model.state_dict()
    assert any(line.startswith('pos_embed: not loaded') for line in report.adapted)


def test_mae_reference_checkpoint_with_args_namespace(
    tmp_path: Path, make_mae: MakeMAE, vit_state: Callable[..., dict[str, Tensor]]
) -> None:
    # What facebookresearch/mae (and CSPT) main_pretrain.py saves.
    source = vit_state(mae=True)
    args = argparse.Namespace(
        model='mae_vit_base_patch16', lr=1.5e-4, norm_pix_loss=True
    )
    path = tmp_path / 'checkpoint-399.pth'
    torch.save({'model': source, 'optimizer': {}, 'epoch': 399, 'args': args}, path)

    model = make_mae({'rgb': 3})
    report = load_init_weights(model, path)

    assert report.adapted[0] == "weights found under ['model']"
    assert_encoder_loaded(model, source)


def test_namespace_does_not_open_the_door_to_code(
    tmp_path: Path, make_mae: MakeMAE, vit_state: Callable[..., dict[str, Tensor]]
) -> None:
    marker = tmp_path / 'code_ran'
    args = argparse.Namespace(model='mae_vit_base_patch16', hook=Payload(marker))
    path = tmp_path / 'checkpoint-399.pth'
    torch.save({'model': vit_state(), 'args': args}, path)
    with pytest.raises(CheckpointError, match='contains pickled code'):
        load_init_weights(make_mae({'rgb': 3}), path)
    assert not marker.exists()
