"""The command-line reference in docs/cli.md matches the commands' help."""

from pathlib import Path

import click
import pytest
from dspt_geo_cli.main import cli
from dspt_geo_cli.reference import REGENERATE, iter_commands, render_reference

DOCS = Path(__file__).parents[2] / 'docs' / 'cli.md'

COMMANDS = [ctx.command_path for ctx in iter_commands(cli, 'dspt-geo')]


def test_reference_is_up_to_date() -> None:
    committed = DOCS.read_text() if DOCS.exists() else ''
    assert render_reference() == committed, (
        f'{DOCS} is out of date with the commands; regenerate it with: {REGENERATE}'
    )


def test_reference_names_every_command() -> None:
    text = render_reference()
    assert set(cli.list_commands(click.Context(cli))) <= {
        path.split()[-1] for path in COMMANDS
    }
    for path in COMMANDS:
        assert f'`{path}`' in text
        assert f'Usage: {path} ' in text


def test_reference_ignores_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = render_reference()
    monkeypatch.setenv('COLUMNS', '40')
    monkeypatch.setattr(click.formatting, 'FORCED_WIDTH', 40)
    assert render_reference() == expected


@pytest.mark.parametrize('path', COMMANDS)
def test_commands_and_options_have_help(path: str) -> None:
    ctx = next(c for c in iter_commands(cli, 'dspt-geo') if c.command_path == path)
    command = ctx.command
    assert command.help or command.short_help, f'{path} has no help text'
    missing = [
        param.opts[0]
        for param in command.get_params(ctx)
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert not missing, f'{path}: options without help=: {", ".join(missing)}'
