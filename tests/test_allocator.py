"""glibc keeps freed memory for the next allocations (issue 16)."""

import subprocess
import sys
import textwrap

import pytest

from dspt_geo.allocator import keep_freed_memory

# Allocates and frees a 40 MB tensor per step, as a model's activations come and
# go; prints the page faults of the second half of the steps.
FAULTS = textwrap.dedent(
    """
    import resource, sys, torch
    from dspt_geo.allocator import keep_freed_memory
    kept = keep_freed_memory() if sys.argv[1] == 'keep' else False
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(40):
        if i == 20:
            start = faults()
        x = torch.ones(10 * 2**20)
        del x
    print(kept, faults() - start)
    """
)


def run(mode: str, **env: str) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, '-c', FAULTS, mode],
        capture_output=True, text=True, check=True, env={'PATH': '/usr/bin', **env},
    )  # fmt: skip
    kept, faults = done.stdout.split()
    return kept == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_freed_memory_is_reused_without_page_faults() -> None:
    kept, faults = run('keep')
    assert kept
    assert faults < 100, 'the freed tensor memory was reused'
    _, default = run('default')
    # glibc's own mmap threshold stops adapting at 32 MB: every 40 MB tensor is
    # mapped anew and faulted in, 10,240 pages of 4 KB.
    assert default > 20 * 10_000


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_a_configured_allocator_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('MALLOC_TRIM_THRESHOLD_', '1000000')
    assert keep_freed_memory() is False
    monkeypatch.delenv('MALLOC_TRIM_THRESHOLD_')
    monkeypatch.setenv('LD_PRELOAD', '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2')
    assert keep_freed_memory() is False
