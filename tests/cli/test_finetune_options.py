"""``finetune --freeze-encoder`` and ``--pos-embed learned`` (issue 13, point 5)."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from dspt_geo.models import load_finetuned, load_model_file
from dspt_geo.models.pos_embed import resample_pos_embed, sincos_pos_embed_2d
from dspt_geo.train import FinetuneConfig, finetune

TASKS = ('classify', 'segment', 'detect')

TINY_ARGS = {'depth': 2, 'embed_dim': 32, 'num_heads': 2}

HEADS: dict[str, dict[str, Any]] = {
    'classify': {},
    'segment': {'channels': 16},
    'detect': {
        'out_channels': 16,
        'representation_size': 32,
        'box_head': '2fc',
        'detector_args': {
            'box_batch_size_per_image': 16,
            'rpn_batch_size_per_image': 16,
            'rpn_pre_nms_top_n_train': 50,
            'rpn_post_nms_top_n_train': 20,
        },
    },
}


@pytest.fixture(scope='module')
def pretrained(labelled, tmp_path_factory, cli_run) -> Path:
    """A tiny pre-trained file (32 px, patch 8: a 4 x 4 grid)."""
    out = tmp_path_factory.mktemp('pre') / 'run'
    result = cli_run(
            'pretrain', labelled.shapes / 'images', '--out', out,
            '--model', 'vit_tiny_patch16_224', '--model-arg', 'depth=2',
            '--model-arg', 'embed_dim=32', '--model-arg', 'num_heads=2',
            '--decoder-depth', 1, '--decoder-dim', 16, '--decoder-heads', 2,
            '--image-size', 32, '--patch-size', 8, '--batch-size', 8, '--lr', '1e-3',
        '--steps', 2, '--num-workers', 0, '--accelerator', 'cpu',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / 'pretrained.safetensors'


class Watch(L.Callback):
    """Record the model at the start, the modes and gradients while training."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.encoder_training: list[bool] = []
        self.head_training: list[bool] = []
        self.optimised: set[int] = set()
        self.pos_grads: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        model = pl_module.model
        self.start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.optimised = {
            id(p)
            for group in trainer.optimizers[0].param_groups
            for p in group['params']
        }

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        model = pl_module.model
        encoder = model.encoder
        self.encoder_training.append(
            encoder.training or any(m.training for m in encoder.modules())
        )
        self.head_training.append(model.training)

    def on_after_backward(self, trainer, pl_module) -> None:
        pos = pl_module.model.encoder.pos_embed
        if pos is not None and pos.grad is not None:
            self.pos_grads.append(float(pos.grad.abs().sum()))


def _config(task, labelled, tiny, out, init, **options) -> FinetuneConfig:
    data = [str(p) for p in tiny.data(labelled, task)]
    images = data[1 : data.index('--labels')] if '--labels' in data else data[1:]
    labels = data[data.index('--labels') + 1 :] if '--labels' in data else []
    return FinetuneConfig(
        task=task,
        images=images,
        labels=labels,
        out=str(out),
        init=str(init),
        head_args=HEADS[task],
        steps=2,
        batch_size=4,
        lr=3e-2,
        num_workers=0,
        accelerator='cpu',
        val_every=2,
        **({'image_size': 64} if task == 'detect' else {}),  # the pyramid's 1/32
        **options,
    )


def _encoder_prefix(task: str) -> str:
    return 'backbone.encoder.' if task == 'detect' else 'encoder.'


@pytest.mark.parametrize('task', TASKS)
def test_freeze_encoder_trains_the_head_only(
    task, labelled, tiny, pretrained, tmp_path
):
    watch = Watch()
    path = finetune(
        _config(
            task, labelled, tiny, tmp_path / 'run', pretrained, freeze_encoder=True
        ),
        callbacks=[watch],
    )

    state, metadata = load_model_file(path)
    source, _ = load_model_file(pretrained)
    prefix = _encoder_prefix(task)
    encoder_keys = [k for k in state if k.startswith(prefix)]
    head_keys = [k for k in state if not k.startswith(prefix)]
    assert encoder_keys and head_keys
    # Bit-identical to the init file's weights (the stem under its group's name).
    group = metadata['sensor']['name']
    for key in encoder_keys:
        name = key.removeprefix(prefix)
        init_key = (
            f'patch_embed.{group}.' + name.removeprefix('patch_embed.')
            if name.startswith('patch_embed.')
            else f'encoder.{name}'
        )
        assert torch.equal(state[key], source[init_key]), key
        assert torch.equal(state[key], watch.start[key]), key
    changed = [k for k in head_keys if not torch.equal(state[k], watch.start[k])]
    assert changed, 'the head did not train'
    # Not in the optimiser, eval mode throughout, the head in training mode.
    model, _ = load_finetuned(path)
    assert watch.optimised and watch.encoder_training == [False, False]
    assert all(watch.head_training)
    assert metadata['training']['freeze_encoder'] is True
    assert model.config()['encoder']['pos_embed'] == 'sincos'


def test_frozen_parameters_are_left_out_of_the_optimiser(
    labelled, tiny, pretrained, tmp_path
):
    watch = Watch()
    config = _config(
        'classify', labelled, tiny, tmp_path / 'run', pretrained, freeze_encoder=True
    )
    finetune(config, callbacks=[watch])
    task_model, _ = load_finetuned(tmp_path / 'run' / 'model.safetensors')
    names = {k for k in watch.start}
    assert any(k.startswith('encoder.') for k in names)
    # Only the classifier's tensors (head.*) are in the optimiser: its count.
    head = [k for k, _ in task_model.named_parameters() if not k.startswith('encoder.')]
    assert len(watch.optimised) == len(head)


def test_learned_pos_embed_starts_from_the_resampled_sincos_grid_and_trains(
    labelled, tiny, pretrained, tmp_path
):
    watch = Watch()
    # Pre-trained at 32 px (4 x 4 patches), fine-tuned at 48 px (6 x 6).
    path = finetune(
        _config(
            'classify', labelled, tiny, tmp_path / 'run', pretrained,
            pos_embed='learned', image_size=48,
        ),
        callbacks=[watch],
    )  # fmt: skip

    state, metadata = load_model_file(path)
    assert metadata['model_config']['encoder']['pos_embed'] == 'learned'
    start = watch.start['encoder.pos_embed']
    expected = resample_pos_embed(
        sincos_pos_embed_2d(32, 4, cls_token=True)[None], (6, 6)
    )
    assert start.shape == (1, 37, 32)
    torch.testing.assert_close(start, expected)
    # Not the sin-cos computed for the new grid: interpolated from the old one.
    assert not torch.allclose(start[0, 1:], sincos_pos_embed_2d(32, 6), atol=1e-3)
    assert watch.pos_grads and all(g > 0 for g in watch.pos_grads)
    assert not torch.equal(state['encoder.pos_embed'], start)

    # predict's loader reads the file: the encoder is rebuilt with its embedding.
    model, _ = load_finetuned(path)
    assert isinstance(model.encoder.pos_embed, torch.nn.Parameter)
    torch.testing.assert_close(model.encoder.pos_embed, state['encoder.pos_embed'])
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 48, 48)).shape == (1, 3)


def test_learned_pos_embed_is_a_shape_setting_of_the_run(
    labelled, tiny, pretrained, tmp_path, cli_run, user_error
):
    common = (
        *tiny.data(labelled, 'classify'), '--init', pretrained, '--out', tmp_path / 'run',
        '--steps', 1, '--batch-size', 4, '--num-workers', 0, '--accelerator', 'cpu',
        '--checkpoint-every', 1,
    )  # fmt: skip
    result = cli_run('finetune', 'classify', *common, '--freeze-encoder')
    assert result.exit_code == 0, result.output

    result = cli_run(
        'finetune',
        'classify',
        *common,
        '--pos-embed',
        'learned',
        '--resume',
        '--steps',
        2,
    )
    user_error(result, 'another model shape', 'pos_embed')


class LossLog(L.Callback):
    """Each step's loss, and whether the logged loss was updated at that step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.logged_steps: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = float(outputs['loss'])
        self.losses.append(loss)
        if float(trainer.callback_metrics.get('loss', float('nan'))) == loss:
            self.logged_steps.append(trainer.global_step)


def test_the_loss_is_logged_at_the_log_steps_and_the_last_step(
    labelled, tiny, pretrained, tmp_path
):
    watch = LossLog()
    config = _config(
        'classify', labelled, tiny, tmp_path / 'run', pretrained, log_every=3
    )
    path = finetune(replace(config, steps=7, val_every=7), callbacks=[watch])

    _, metadata = load_model_file(path)
    assert len(watch.losses) == 7
    # Steps 3 and 6 (every 3rd), and the last one, 7; epoch ends may add more.
    assert {3, 6, 7} <= set(watch.logged_steps)
    assert len(watch.logged_steps) < 7
    assert metadata['training']['final_loss'] == pytest.approx(watch.losses[-1])
