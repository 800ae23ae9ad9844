"""Does continued pre-training help? Probes of random init vs pre-trained.

1. Pre-train a small ViT with ``dspt-geo pretrain`` on real unlabelled imagery
   (default: the NAIP scene in ``../shared/data/optical``, 4-band uint8).
2. Probe it with :func:`dspt_geo.probe.probe` (``dspt-geo probe``) against the same
   architecture at random initialisation on the labelled 6-class NAIP-like patch set
   (``naip_patches_6class.zip``: 28x28 4-band patches, trn/val/tst folders, resized
   to the encoder's size): k-NN and logistic regression on the mean patch token, all
   training labels and 3 per class (5 draws).

Usage::

    python benchmarks/pretrain_probe.py [--steps 2000] [--run runs/probe]
"""

import argparse
import subprocess
import sys
from pathlib import Path

from dspt_geo.probe import format_table, probe

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
TINY = {'depth': 6, 'embed_dim': 192, 'num_heads': 3}


def main() -> None:
    """Pre-train (unless the run exists), probe, print the table."""
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
    report = probe(
        [model_file],
        [DATA / 'labelled' / 'classification' / 'naip_patches_6class.zip'],
        out=Path(args.run) / 'probe',
        fractions=(3 / 8, 1.0),  # 8 training patches per class: 3 per class, and all
        seeds=range(5),
    )
    print(format_table(report))


if __name__ == '__main__':
    main()
