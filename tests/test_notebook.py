"""The quickstart notebook runs headless, start to end, and shows its results."""

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip(
    'nbformat', reason='the notebook test needs the test extra: pip install -e .[test]'
)
nbclient = pytest.importorskip(
    'nbclient', reason='the notebook test needs the test extra: pip install -e .[test]'
)
pytest.importorskip(
    'ipykernel', reason='the notebook test needs the test extra: pip install -e .[test]'
)
from jupyter_client.manager import KernelManager

NOTEBOOK = Path(__file__).parents[1] / 'notebooks' / 'quickstart.ipynb'


def _code_cells(nb: 'nbformat.NotebookNode') -> list['nbformat.NotebookNode']:
    return [cell for cell in nb.cells if cell.cell_type == 'code']


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in _code_cells(nb):
        assert not cell.outputs, 'clear the outputs before committing the notebook'
        assert cell.execution_count is None


def test_kernel_is_this_python() -> None:
    # ipykernel installs its kernelspec under sys.prefix; jupyter_client runs a
    # spec's `python` as sys.executable, so the notebook sees this environment.
    command = KernelManager(kernel_name='python3').format_kernel_cmd()
    assert Path(command[0]).resolve() == Path(sys.executable).resolve(), (
        f'the python3 kernel runs {command[0]}, not {sys.executable}; '
        'install ipykernel into this environment'
    )


@pytest.mark.slow
def test_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name='python3',
        timeout=600,
        resources={'metadata': {'path': str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell

    cells = _code_cells(nb)
    for cell in cells:
        errors = [o for o in cell.outputs if o.output_type == 'error']
        assert not errors, cell.source

    def images(cell: 'nbformat.NotebookNode') -> int:
        return sum('image/png' in o.get('data', {}) for o in cell.outputs)

    def text(cell: 'nbformat.NotebookNode') -> str:
        return ''.join(o.get('text', '') for o in cell.outputs)

    # The data, the reconstruction preview and the predicted mask are shown.
    assert images(next(c for c in cells if 'previews' in c.source)) == 1
    assert images(next(c for c in cells if 'predicted classes' in c.source)) == 1
    assert images(next(c for c in cells if "'labels'" in c.source)) == 1
    report = text(next(c for c in cells if 'format_description' in c.source))
    assert 'blue, green, red, nir' in report
    assert 'model.safetensors' in text(
        next(c for c in cells if 'finetune(' in c.source)
    )
    predicted = text(next(c for c in cells if 'predict_scene(' in c.source))
    assert 'landscape_mask.tif' in predicted
    assert 'cropland' in predicted

    # Everything went to the temporary folder, and the last cell removed it.
    folder = Path(text(cells[0]).removeprefix('working in').strip())
    assert folder.is_absolute()
    assert not folder.exists()
    assert not list(tmp_path.iterdir())
