"""Two training processes on the CPU (gloo): one run folder, different patches."""

import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dspt_geo.data import SensorDataset, group_rasters, scan_rasters
from dspt_geo.data.batches import SensorBatchStream
from dspt_geo.models import load_model_file


def _pretrain(exe, args, env) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [exe, 'pretrain', *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return done


@pytest.mark.slow
def test_ddp_run_writes_one_run_folder_and_resumes(
    sample_data, tmp_path, dspt_geo_exe, tiny_model, subprocess_env, read_metrics
):
    run = tmp_path / 'run'
    ddp = ['--devices', '2', '--strategy', 'ddp', '--checkpoint-every', '3']
    args = [sample_data, '--out', run, *tiny_model, *ddp]

    _pretrain(dspt_geo_exe, [*args, '--steps', 6], subprocess_env)

    _, metadata = load_model_file(run / 'pretrained.safetensors')
    assert metadata['training']['world_size'] == 2
    assert metadata['training']['steps'] == 6
    assert set(metadata['sensors']) == {
        '4band-uint16-blue-green-red-nir',
        '2band-float32-VV-VH',
    }
    assert list(tmp_path.rglob('*.safetensors')) == [run / 'pretrained.safetensors']
    checkpoints = list(tmp_path.rglob('*.ckpt'))
    assert checkpoints and {p.parent for p in checkpoints} == {run / 'checkpoints'}
    assert not list(tmp_path.rglob('lightning_logs'))
    assert [int(row['step']) for row in read_metrics(run)] == list(range(1, 7))

    _pretrain(dspt_geo_exe, [*args, '--steps', 9, '--resume'], subprocess_env)

    _, metadata = load_model_file(run / 'pretrained.safetensors')
    assert metadata['training']['world_size'] == 2
    assert metadata['training']['steps'] == 9
    assert [int(row['step']) for row in read_metrics(run)] == list(range(1, 10))
    last = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert last['global_step'] == 9


def _stream_batches(
    rank: int, rendezvous: str, data: Path, outputs: list[Path]
) -> None:
    """One process of a gloo group: save the batches of a SensorBatchStream."""
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=rendezvous, rank=rank, world_size=2)
    try:
        groups = group_rasters(scan_rasters([data]).rasters)
        datasets = {group.name: SensorDataset(group) for group in groups}
        stream = SensorBatchStream(datasets, size=32, batch_size=4, batches=8, seed=0)
        batches = [(batch['sensor'], batch['image']) for batch in stream]
        torch.save({'len': len(stream), 'batches': batches}, outputs[rank])
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ranks_train_on_different_patches(sample_data, tmp_path):
    rendezvous = f'file://{tmp_path / "rendezvous"}'
    outputs = [tmp_path / f'rank{rank}.pt' for rank in range(2)]

    # Forked, not spawned: the processes start without importing anything again.
    mp.start_processes(
        _stream_batches,
        args=(rendezvous, sample_data, outputs),
        nprocs=2,
        start_method='fork',
    )

    ranks = [torch.load(out, weights_only=True) for out in outputs]
    # Each rank streams its half of the 8 batches of an epoch ...
    assert [r['len'] for r in ranks] == [4, 4]
    assert [len(r['batches']) for r in ranks] == [4, 4]
    # ... and no batch of one rank is a batch of the other.
    for sensor, images in ranks[0]['batches']:
        for other_sensor, other_images in ranks[1]['batches']:
            assert sensor != other_sensor or not torch.equal(images, other_images)


def _convert_batch_norm(rank: int, rendezvous: str, outputs: list[Path]) -> None:
    """One process of a gloo group: a segmentation task after Lightning's BN sync."""
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from dspt_geo.models import build_encoder, build_task_model
    from dspt_geo.train.finetune import FinetuneTask

    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=rendezvous, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        encoder, _ = build_encoder(
            'vit_tiny_patch16_224', 3, image_size=32, patch_size=8,
            model_args={'depth': 2, 'embed_dim': 32, 'num_heads': 2},
        )  # fmt: skip
        model = build_task_model('segment', encoder, 3)
        task = FinetuneTask(model.config(), ['a', 'b', 'c'], model=model).eval()
        images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        before = {
            'norms': sum(isinstance(m, nn.BatchNorm2d) for m in task.modules()),
            'keys': sorted(task.state_dict()),
            'logits': task.model(images).detach(),
        }
        # What the finetune run's Trainer(sync_batchnorm=True) applies under DDP.
        task = TorchSyncBatchNorm().apply(task)
        synced = [m for m in task.modules() if isinstance(m, nn.SyncBatchNorm)]
        torch.save(
            {
                **{f'before_{k}': v for k, v in before.items()},
                'synced': len(synced),
                'aux_synced': sum(
                    isinstance(m, nn.SyncBatchNorm) for m in task.aux_head.modules()
                ),
                'plain_left': sum(type(m) is nn.BatchNorm2d for m in task.modules()),
                'keys': sorted(task.state_dict()),
                'model_keys': sorted(task.model.state_dict()),
                'logits': task.model(images).detach(),
                'world': dist.get_world_size(synced[0].process_group),
            },
            outputs[rank],
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_segmentation_batch_norm_becomes_sync_batch_norm_under_ddp(tmp_path):
    rendezvous = f'file://{tmp_path / "rendezvous"}'
    outputs = [tmp_path / f'rank{rank}.pt' for rank in range(2)]

    mp.start_processes(
        _convert_batch_norm, args=(rendezvous, outputs), nprocs=2, start_method='fork'
    )

    for out in outputs:
        rank = torch.load(out, weights_only=True)
        # Every batch norm of UperNet, its pyramid and the auxiliary head is synced.
        assert rank['synced'] == rank['before_norms'] > 0
        assert rank['aux_synced'] == 1 and rank['plain_left'] == 0
        assert rank['world'] == 2
        # Same state keys: a model file from a DDP run loads into the plain model,
        # and the auxiliary head is still outside the model that is exported.
        assert rank['keys'] == rank['before_keys']
        assert not any('aux' in key for key in rank['model_keys'])
        torch.testing.assert_close(rank['logits'], rank['before_logits'])
