"""Does continued pre-training help? A linear probe, random init vs pre-trained.

1. Pre-train a small ViT with ``dspt-geo pretrain`` on real unlabelled imagery
   (default: the NAIP scene in ``../shared/data/optical``, 4-band uint8).
2. Embed the labelled 6-class NAIP-like patch set (``naip_patches_6class.zip``:
   28x28 4-band patches, trn/val/tst folders) with (a) the randomly initialised
   encoder and (b) the pre-trained one: mean of the patch tokens of the last block.
3. Fit a logistic-regression probe on the training patches (weight decay chosen on
   the validation patches) and report test accuracy, for all labels and for few
   labels per class.

Usage::

    python benchmarks/pretrain_probe.py [--steps 2000] [--run runs/probe]
"""

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from dspt_geo.models import (
    MaskedAutoencoder,
    create_encoder,
    load_init_weights,
    load_model_file,
)

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
TINY = {'depth': 6, 'embed_dim': 192, 'num_heads': 3}


def load_patches(zip_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Patches and labels per split from the zip (read through GDAL's /vsizip/)."""
    names = zipfile.ZipFile(zip_path).namelist()
    classes = sorted(
        {n.split('/')[1] for n in names if n.startswith('trn/') and n.count('/') == 2}
    )
    splits = {}
    for split in ('trn', 'val', 'tst'):
        images, labels = [], []
        for name in sorted(
            n for n in names if n.startswith(f'{split}/') and n.endswith('.tif')
        ):
            with rasterio.open(f'/vsizip/{zip_path}/{name}') as src:
                images.append(src.read().astype(np.float32))
            labels.append(classes.index(name.split('/')[1]))
        splits[split] = (np.stack(images), np.array(labels), classes)
    return splits


def encoder_from(
    metadata: dict, path: Path | None, image_size: int
) -> MaskedAutoencoder:
    """The run's MAE, random (path None, seeded) or with the pre-trained weights."""
    torch.manual_seed(0)
    model = metadata['model']
    sensors = {name: s['in_chans'] for name, s in metadata['sensors'].items()}
    encoder = create_encoder(
        model['name'], in_chans=1, img_size=image_size, patch_size=model['patch_size'],
        **model['model_args'],
    )  # fmt: skip
    mae = MaskedAutoencoder(
        encoder, sensors, decoder_embed_dim=model['decoder_embed_dim'],
        decoder_depth=model['decoder_depth'], decoder_num_heads=model['decoder_num_heads'],
    )  # fmt: skip
    if path is not None:
        load_init_weights(mae, path)
    return mae.eval()


@torch.no_grad()
def embed(
    mae: MaskedAutoencoder, sensor: str, images: np.ndarray, stats: dict, size: int
) -> torch.Tensor:
    """Mean patch token of normalised, resized patches."""
    x = torch.from_numpy(images)
    mean = torch.tensor(stats['mean']).view(1, -1, 1, 1)
    std = torch.tensor(stats['std']).view(1, -1, 1, 1)
    x = F.interpolate(
        (x - mean) / std, size=(size, size), mode='bilinear', align_corners=False
    )
    return mae.forward_features(x, sensor)[:, 1:].mean(dim=1)


def probe(train: tuple, val: tuple, test: tuple) -> float:
    """Test accuracy of a logistic regression, weight decay picked on val."""

    def fit(x: torch.Tensor, y: torch.Tensor, decay: float) -> torch.nn.Linear:
        torch.manual_seed(0)
        head = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
        optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(head(x), y) + decay * head.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return head

    mu, sigma = train[0].mean(0), train[0].std(0) + 1e-6
    norm = [((x - mu) / sigma, y) for x, y in (train, val, test)]
    best = max(
        (1e-4, 1e-3, 1e-2, 1e-1),
        key=lambda d: (
            (fit(*norm[0], d)(norm[1][0]).argmax(1) == norm[1][1]).float().mean().item()
        ),
    )
    head = fit(*norm[0], best)
    return (head(norm[2][0]).argmax(1) == norm[2][1]).float().mean().item()


def main() -> None:
    """Pre-train, embed, probe, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=2000)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=1.5e-3)
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument('--patch-size', type=int, default=4)
    parser.add_argument('--run', default='runs/probe', help='pre-training run folder')
    parser.add_argument(
        '--unlabelled', nargs='+', default=[str(DATA / 'optical' / 'naip_20200831.tif')]
    )
    args = parser.parse_args()

    model_file = Path(args.run) / 'pretrained.safetensors'
    if not model_file.exists():
        command = [
            str(Path(sys.executable).parent / 'dspt-geo'), 'pretrain', *args.unlabelled,
            '--out', args.run, '--model', 'vit_tiny_patch16_224',
            *[f'--model-arg={k}={v}' for k, v in TINY.items()],
            '--patch-size', str(args.patch_size), '--image-size', str(args.image_size),
            '--decoder-depth', '2', '--decoder-dim', '128', '--decoder-heads', '4',
            '--batch-size', str(args.batch_size), '--steps', str(args.steps), '--lr', str(args.lr),
            '--samples-per-epoch', str(args.batch_size * 500), '--checkpoint-every', '500',
        ]  # fmt: skip
        subprocess.run(command, check=True)
    _, metadata = load_model_file(model_file)
    sensor = next(iter(metadata['sensors']))
    stats = metadata['sensors'][sensor]['statistics']
    splits = load_patches(
        DATA / 'labelled' / 'classification' / 'naip_patches_6class.zip'
    )

    rows = []
    for label, path in (
        ('random init', None),
        (f'pre-trained, {metadata["training"]["steps"]} steps', model_file),
    ):
        mae = encoder_from(metadata, path, args.image_size)
        feats = {
            s: (embed(mae, sensor, x, stats, args.image_size), torch.from_numpy(y))
            for s, (x, y, _) in splits.items()
        }
        full = probe(feats['trn'], feats['val'], feats['tst'])
        few = []
        for seed in range(5):  # 3 labels per class, 5 draws
            rng = np.random.default_rng(seed)
            y = feats['trn'][1].numpy()
            pick = np.concatenate(
                [
                    rng.choice(np.flatnonzero(y == c), 3, replace=False)
                    for c in np.unique(y)
                ]
            )
            few.append(
                probe(
                    (feats['trn'][0][pick], feats['trn'][1][pick]),
                    feats['val'],
                    feats['tst'],
                )
            )
        rows.append((label, full, float(np.mean(few)), float(np.std(few))))

    n = {s: len(v[1]) for s, v in splits.items()}
    print(
        f'\nlinear probe on naip_patches_6class (train {n["trn"]}, val {n["val"]}, test {n["tst"]} patches; chance 0.17)\n'
    )
    print(
        f'| encoder | test acc, all {n["trn"]} labels | test acc, 3 labels/class (mean ± sd of 5 draws) |'
    )
    print('|---|---:|---:|')
    for label, full, few_mean, few_sd in rows:
        print(f'| {label} | {full:.3f} | {few_mean:.3f} ± {few_sd:.3f} |')


if __name__ == '__main__':
    main()
