"""The probe's report as people read it: a table and a plot of accuracy vs labels."""

import os
from pathlib import Path
from typing import Any

from ..outputs import atomic_write

__all__ = ('format_table', 'write_plot')


def format_table(report: dict[str, Any]) -> str:
    """One row per encoder and head, one column per label fraction: mean ± sd.

    Args:
        report: a report of :func:`~dspt_geo.probe.probe`.

    Returns:
        the table, with a header line naming the metric and the test split.
    """
    fractions = report['fractions']
    cells = {
        (
            row['encoder'],
            row['head'],
            row['fraction'],
        ): f'{row["mean"]:.3f} ± {row["sd"]:.3f}'
        for row in report['summary']
    }
    rows = list(
        dict.fromkeys((row['encoder'], row['head']) for row in report['summary'])
    )
    header = ['encoder', 'head', *(f'{f:g} labels' for f in fractions)]
    lines = [
        [encoder, head, *(cells.get((encoder, head, f), '') for f in fractions)]
        for encoder, head in rows
    ]
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return '  '.join(str(v).ljust(w) for v, w in zip(values, widths, strict=True))

    splits = report['splits']
    title = (
        f'test {report["metric"]} (mean ± sd over seeds {report["seeds"]}); '
        f'train {splits.get("train")}, val {splits.get("val")}, test {splits.get("test")} chips'
    )
    return '\n'.join([title, line(header), *(line(v) for v in lines)])


def write_plot(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Plot accuracy vs label fraction, a line per encoder, error bars of the seeds.

    One panel per head; the x axis is logarithmic. Written atomically as PNG.

    Args:
        report: a report of :func:`~dspt_geo.probe.probe`.
        path: the PNG file.

    Returns:
        *path*.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    heads = list(dict.fromkeys(row['head'] for row in report['summary']))
    figure, axes = plt.subplots(
        1, len(heads), figsize=(4.5 * len(heads), 3.6), squeeze=False, sharey=True
    )
    for axis, head in zip(axes[0], heads, strict=True):
        encoders = dict.fromkeys(
            row['encoder'] for row in report['summary'] if row['head'] == head
        )
        for encoder in encoders:
            rows = sorted(
                (
                    r
                    for r in report['summary']
                    if r['head'] == head and r['encoder'] == encoder
                ),
                key=lambda r: r['fraction'],
            )
            axis.errorbar(
                [r['fraction'] for r in rows],
                [r['mean'] for r in rows],
                yerr=[r['sd'] for r in rows],
                marker='o',
                capsize=3,
                label=Path(encoder).parent.name + '/' + Path(encoder).name
                if os.sep in encoder
                else encoder,
            )
        axis.set_xscale('log')
        axis.set_xlabel('share of training labels')
        axis.set_title(f'{head} probe')
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(f'test {report["metric"]}')
    axes[0][-1].legend(fontsize='small')
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        figure.savefig(tmp, dpi=100)
        plt.close(figure)
    return path
