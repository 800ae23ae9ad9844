"""Images per second of fine-tuning: the encoder, the bare task step, the whole loop.

For each task, on real labelled samples (``../shared/data``: SpaceNet building
footprints over a panchromatic scene for segment and detect, the EuroSAT RGB class
folders for classify):

(c) the loop: ``dspt_geo.train.finetune`` with its default heads (or ``--head-arg``),
    timed from its 5th optimiser step to the last, validation excluded; the run
    validates once at its end and that validation is timed on its own;
(b) the bare task step: the model the loop trained (rebuilt from its model file:
    config and weights), the task's training loss (``FinetuneTask.training_step``, with
    segmentation's auxiliary head), backward and the loop's optimiser
    (``FinetuneTask.optimizer``: fused AdamW over the layer-wise decay groups), on
    the loop's own training batches, kept in memory: warmed up on its first two,
    timed over the ones the loop timed, in its order;
(a) the encoder alone: the same encoder, forward + backward of the mean of its
    tokens and AdamW, on the same images.

(c)/(b) is what data loading and bookkeeping cost (target >= 0.9x); (b)/(a) is the
head's share (target >= 0.5x: the head costs at most the encoder's own step).
The loop's steps are also split into phases (data, forward, backward, optimiser;
:class:`LoopTimer`), printed in milliseconds beside the bare step's.
Each of ``--repeats`` repeats runs (c), then (a) and (b) (the loop is rebuilt
each time; the bare steps use the first loop's batches); the ratios are taken
within each repeat and the table gives their medians, and the speeds and phases
of the repeat with the median (c)/(b); every repeat's ratios are printed below.
Validation
is reported as seconds per validation pass and as a share of a training epoch
(the epoch's chips at the loop's speed). On CUDA the rows use bf16 at 224 and 512
px. Usage::

    python benchmarks/finetune.py [--tasks classify segment detect] [--sizes 64]
        [--batch-size 8] [--steps 15] [--head-arg TASK:KEY=VALUE ...]
"""

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from dspt_geo import SUMMARY_LOGGER
from dspt_geo.models import load_model_file
from dspt_geo.train import FinetuneConfig, finetune
from dspt_geo.train.finetune import FinetuneTask
from dspt_geo.train.optim import adamw

_WARMUP = 5
_SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
_CPU_MODEL = ('vit_tiny_patch16_224', {'depth': 6}, 8)  # the README's CPU encoder
_GPU_MODEL = ('vit_base_patch16_224', {}, 16)


def _data(task: str, shared: Path) -> dict[str, Any]:
    """Images and labels of the real sample for *task*."""
    if task == 'classify':
        return {'images': [str(shared / 'labelled' / 'classification' / 'eurosat_rgb')]}
    folder = shared / 'labelled' / 'buildings'
    return {
        'images': [str(folder / 'spacenet_pan.tif')],
        'labels': [str(folder / 'spacenet_buildings.geojson')],
    }


class LoopTimer(L.Callback):
    """Time training from step _WARMUP, its phases, each validation pass; keep batches.

    Phases per timed step (ms): ``data`` from the end of one step to the start of
    the next (fetching, collating, normalising and augmenting the batch),
    ``forward`` (the training step up to its loss), ``backward``, and ``optimiser``
    (the optimiser and scheduler steps and the end-of-batch hooks).
    """

    PHASES = ('data', 'forward', 'backward', 'optimiser')

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0
        self.images = 0
        self.batches: list[dict[str, Any]] = []
        self.val_seconds: list[float] = []
        self.val_images = 0
        self.train_chips = 0
        self.phases = dict.fromkeys(self.PHASES, 0.0)
        self.steps = 0
        self._marks: dict[str, float] = {}
        self._val_start = 0.0

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        loader = trainer.train_dataloader
        self.train_chips = len(loader.dataset) if loader is not None else 0  # type: ignore[arg-type]

    def on_train_batch_start(
        self, trainer: L.Trainer, module: Any, batch: Any, batch_idx: int
    ) -> None:
        self.batches.append(_detach(batch))
        if trainer.global_step == _WARMUP and self.start is None:
            self.start = self._now()
        self._marks['start'] = self._now()

    def on_before_backward(self, trainer: L.Trainer, module: Any, loss: Any) -> None:
        self._marks['backward'] = self._now()

    def on_after_backward(self, trainer: L.Trainer, module: Any) -> None:
        self._marks['optimiser'] = self._now()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, *args: Any
    ) -> None:
        now = self._now()
        if self.start is not None:
            self.images += batch['image'].shape[0]
            marks = self._marks
            if 'end' in marks:  # the previous timed step's end
                self.phases['data'] += marks['start'] - marks['end']
            self.phases['forward'] += marks['backward'] - marks['start']
            self.phases['backward'] += marks['optimiser'] - marks['backward']
            self.phases['optimiser'] += now - marks['optimiser']
            self.steps += 1
            marks['end'] = self.end = now

    def on_validation_start(self, trainer: L.Trainer, module: Any) -> None:
        self._val_start = self._now()
        self.val_images = 0

    def on_validation_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self.val_images += batch['image'].shape[0]

    def on_validation_end(self, trainer: L.Trainer, module: Any) -> None:
        self.val_seconds.append(self._now() - self._val_start)
        self._marks.pop('end', None)  # the next gap is not data loading

    def speed(self) -> float:
        """Images/s of the timed steps."""
        return self.images / (self.end - self.start) if self.start else 0.0

    def phase_ms(self) -> dict[str, float]:
        """Milliseconds per timed step of each phase."""
        return {k: 1000 * v / max(1, self.steps) for k, v in self.phases.items()}


def _detach(batch: dict[str, Any]) -> dict[str, Any]:
    """A copy of a batch that outlives the loop."""
    return {
        key: [v.detach().clone() for v in value]
        if isinstance(value, list)
        else value.detach().clone()
        if isinstance(value, torch.Tensor)
        else value
        for key, value in batch.items()
    }


def run_loop(task: str, size: int, args: argparse.Namespace, run: Path) -> LoopTimer:
    """The finetune loop, and its timer."""
    name, model_args, patch = _GPU_MODEL if torch.cuda.is_available() else _CPU_MODEL
    timer = LoopTimer()
    config = FinetuneConfig(
        task=task,  # type: ignore[arg-type]
        out=str(run),
        **_data(task, args.data),
        model=args.model or name,
        model_args=model_args if args.model is None else {},
        image_size=size,
        patch_size=patch if args.model is None else None,
        head_args=args.heads.get(task, {}),
        batch_size=args.batch_size,
        steps=args.steps + _WARMUP,
        val_every=args.steps + _WARMUP,
        checkpoint_every=10**6,
        lr=1e-3,
        precision=args.precision,
        num_workers=args.workers,
        accelerator='gpu' if torch.cuda.is_available() else 'cpu',
        devices=1,
    )
    finetune(config, callbacks=[timer])
    return timer


def _timed(step: Any, batches: list[dict[str, Any]]) -> float:
    """Images/s of *step* over the loop's timed batches, after 2 warm-up steps.

    The timed batches are the ones the loop timed, in its order: a detector's step
    costs more on chips with more objects, so a few batches would not do.
    """
    for batch in batches[:2]:
        step(batch)
    start = LoopTimer._now()
    for batch in batches[_WARMUP:]:
        step(batch)
    images = sum(batch['image'].shape[0] for batch in batches[_WARMUP:])
    return images / (LoopTimer._now() - start)


def bare_steps(
    model_config: dict[str, Any],
    class_names: list[str],
    state: dict[str, torch.Tensor],
    batches: list[dict[str, Any]],
    args: argparse.Namespace,
) -> tuple[float, float, dict[str, float]]:
    """Images/s of (a) the encoder step and (b) the task model step; (b)'s phases (ms)."""
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dtype = torch.bfloat16 if 'bf16' in (args.precision or '') else None
    batches = [
        {
            k: [x.to(device) for x in v]
            if isinstance(v, list)
            else v.to(device)
            if isinstance(v, torch.Tensor)
            else v
            for k, v in batch.items()
        }
        for batch in batches
    ]
    task = FinetuneTask(model_config, class_names)
    # The loop's trained weights: a detector's proposals, and so its heads' work,
    # change as it learns.
    task.model.load_state_dict(state)
    task.to(device).train()
    encoder = task.model.encoder
    # The loop's optimiser and groups (layer-wise decay; segmentation's auxiliary
    # head trains too); the encoder alone with one group.
    optimizers = {
        'task': task.optimizer(),
        'encoder': adamw(encoder.parameters(), 1e-4),
    }

    def encoder_step(batch: dict[str, Any]) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = encoder(batch['image']).float().mean()
        loss.backward()
        optimizers['encoder'].step()
        optimizers['encoder'].zero_grad(set_to_none=True)

    def task_step(batch: dict[str, Any]) -> None:
        start = LoopTimer._now()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = task.training_step(batch, 0)
        backward = LoopTimer._now()
        loss.backward()
        step = LoopTimer._now()
        optimizers['task'].step()
        optimizers['task'].zero_grad(set_to_none=True)
        end = LoopTimer._now()
        for phase, seconds in zip(
            ('forward', 'backward', 'optimiser'),
            (backward - start, step - backward, end - step),
            strict=True,
        ):
            phases[phase].append(seconds)

    phases: dict[str, list[float]] = {'forward': [], 'backward': [], 'optimiser': []}
    encoder_speed = _timed(encoder_step, batches)
    task_speed = _timed(task_step, batches)
    timed = slice(2, None)  # after the warm-up steps
    ms = {k: 1000 * sum(v[timed]) / len(v[timed]) for k, v in phases.items()}
    return encoder_speed, task_speed, ms


def _heads(values: list[str]) -> dict[str, dict[str, Any]]:
    """``TASK:KEY=VALUE`` options as head arguments per task (YAML values)."""
    heads: dict[str, dict[str, Any]] = {}
    for value in values:
        task, _, pair = value.partition(':')
        key, _, text = pair.partition('=')
        heads.setdefault(task, {})[key] = yaml.safe_load(text)
    return heads


def main() -> None:
    """Run every task and size; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tasks', nargs='+', default=['classify', 'segment', 'detect'])
    cuda = torch.cuda.is_available()
    parser.add_argument(
        '--sizes', nargs='+', type=int, default=[224, 512] if cuda else [64]
    )
    parser.add_argument(
        '--model',
        help='timm name (default: tiny ViT depth 6, patch 8 on the CPU; ViT-B/16 on CUDA)',
    )
    parser.add_argument('--batch-size', type=int, default=32 if cuda else 8)
    parser.add_argument('--steps', type=int, default=15, help='timed steps')
    parser.add_argument('--precision', default='bf16-mixed' if cuda else '32-true')
    parser.add_argument('--workers', type=int, default=2, help='DataLoader workers')
    parser.add_argument(
        '--repeats',
        type=int,
        default=2,
        help='repeats of (c), (a) and (b); the tables give the median ratios',
    )
    parser.add_argument(
        '--data',
        type=Path,
        default=_SHARED,
        help='the real sample data (default: ../shared/data)',
    )
    parser.add_argument(
        '--head-arg', action='append', default=[], metavar='TASK:KEY=VALUE',
        help='head argument of one task, e.g. segment:channels=512',
    )  # fmt: skip
    args = parser.parse_args()
    args.heads = _heads(args.head_arg)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s: %(message)s')
    logging.getLogger(SUMMARY_LOGGER).setLevel(logging.INFO)
    warnings.filterwarnings('ignore', message='.*self.log.*')
    card = (
        torch.cuda.get_device_name()
        if cuda
        else f'CPU ({torch.get_num_threads()} threads)'
    )

    print(
        f'\n{args.model or ("ViT-B/16" if cuda else "tiny ViT (depth 6, width 192, patch 8)")}, '
        f'batch {args.batch_size}, {args.precision}, {card}\n\n'
        '| px | task | (a) encoder img/s | (b) task step img/s | (c) loop img/s | '
        '(c)/(b) | (b)/(a) | validation s (chips) | val / train epoch |\n'
        '|---:|---|---:|---:|---:|---:|---:|---:|---:|',
        flush=True,
    )  # each row as soon as it is measured
    heads, phases, repeats = [], [], []
    for size in args.sizes:
        for task in args.tasks:
            # Each repeat runs (c), then (a) and (b) right after it; ratios are
            # taken within a repeat, so the machine's drift between repeats
            # (5-30 % here) cancels, and the table gives their medians.
            loops: list[LoopTimer] = []
            runs = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    run = Path(tmp) / 'run'
                    loops.append(run_loop(task, size, args, run))
                    state, metadata = load_model_file(run / 'model.safetensors')
                # --val-every is respected: one validation, at the last step
                assert len(loops[-1].val_seconds) == 1, loops[-1].val_seconds
                config = metadata['model_config']
                names = [c['name'] for c in metadata['classes']]
                runs.append(bare_steps(config, names, state, loops[0].batches, args))
            loop_ratios = [
                loop.speed() / run[1] for loop, run in zip(loops, runs, strict=True)
            ]
            head_ratios = [run[1] / run[0] for run in runs]
            # Speeds and phases of the repeat with the median loop ratio.
            middle = sorted(range(len(loops)), key=loop_ratios.__getitem__)[
                len(loops) // 2
            ]
            timer, (encoder, bare, bare_ms) = loops[middle], runs[middle]
            looped = timer.speed()
            val = timer.val_seconds[0]
            epoch = timer.train_chips / looped
            print(
                f'| {size} | {task} | {encoder:.1f} | {bare:.1f} | {looped:.1f} | '
                f'{statistics.median(loop_ratios):.2f}x | '
                f'{statistics.median(head_ratios):.2f}x | '
                f'{val:.1f} ({timer.val_images}) | {val / epoch:.2f} |',
                flush=True,
            )
            repeats.append(
                f'- {size} px {task}: (c)/(b) '
                + ', '.join(f'{r:.2f}' for r in loop_ratios)
                + '; (b)/(a) '
                + ', '.join(f'{r:.2f}' for r in head_ratios)
            )
            heads.append(f'- {size} px {task}: {json.dumps(config["options"])}')
            ms = timer.phase_ms()
            phases.append(
                f'| {size} | {task} | {1000 / bare * args.batch_size:.1f} | '
                + ' / '.join(f'{bare_ms[k]:.1f}' for k in LoopTimer.PHASES[1:])
                + ' | '
                + ' | '.join(f'{ms[k]:.1f}' for k in LoopTimer.PHASES)
                + f' | {sum(ms.values()):.1f} |'
            )
    print(
        '\nloop phases, ms per step (data: between steps; optimiser: with the '
        'end-of-step hooks)\n\n| px | task | (b) bare step | (b) forward / backward / '
        'optimiser | data | forward | backward | optimiser | loop step |\n'
        '|---:|---|---:|---:|---:|---:|---:|---:|---:|',
        *phases,
        sep='\n',
    )
    print('\nratios of each repeat:', *repeats, sep='\n')
    print('\nheads:', *heads, sep='\n')


if __name__ == '__main__':
    main()
