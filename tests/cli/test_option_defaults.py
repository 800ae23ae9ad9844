"""One source of defaults: the configuration dataclasses (issue 10, point 5).

``pretrain`` and ``finetune`` leave options at their defaults out of the
configuration, so the dataclass defaults apply; an option's ``default`` only shows
in ``--help`` and must say the same. The Lightning tasks' keyword defaults follow
them too. Also: multi-value options take the words after them.
"""

import dataclasses
import inspect
from typing import Any

import click
import pytest
from click.testing import CliRunner
from dspt_geo_cli.finetune import finetune
from dspt_geo_cli.main import cli
from dspt_geo_cli.options import MultiValueCommand, MultiValueOption
from dspt_geo_cli.pretrain import pretrain

from dspt_geo.train import FinetuneConfig, FinetuneTask, MAEPretrainTask, PretrainConfig

#: Parameters of the commands that are no configuration keys.
NOT_CONFIGURATION = {'paths', 'task', 'config_file', 'resume', 'overwrite'}

#: Task arguments named like a configuration key but meaning something else: the
#: task's lr is the peak the run computes (from base_lr unless lr is given), its
#: class_weights the weights the run computes by the configuration's rule, the
#: fine-tuning task's model the built task model (not a timm name).
DIFFERENT_MEANING = {'lr', 'class_weights', 'model'}

COMMANDS = [(pretrain, PretrainConfig), (finetune, FinetuneConfig)]

REQUIRED = object()


def field_defaults(config: type) -> dict[str, Any]:
    """The dataclass's default per field; REQUIRED where there is none."""
    defaults = {}
    for field in dataclasses.fields(config):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
        else:
            defaults[field.name] = REQUIRED
    return defaults


def same_default(option: Any, field: Any) -> bool:
    """Whether an option's default says the field's: empty and unset agree."""
    empty = (None, (), [], {}, REQUIRED)
    if option in empty or field in empty:
        return option in empty and field in empty
    return option == field and type(option) is type(field)


@pytest.mark.parametrize(('command', 'config'), COMMANDS, ids=['pretrain', 'finetune'])
def test_every_option_is_a_configuration_key_with_its_default(command, config):
    defaults = field_defaults(config)
    checked = []
    for param in command.params:
        if param.name in NOT_CONFIGURATION:
            continue
        assert param.name in defaults, f'{param.opts} sets no {config.__name__} field'
        option, field = param.to_info_dict()['default'], defaults[param.name]
        assert same_default(option, field), (
            f'{param.opts}: default {option!r}, {config.__name__}.{param.name}: '
            f'{field!r}'
        )
        checked.append(param.name)
    assert {'batch_size', 'base_lr', 'weight_decay', 'seed'} <= set(checked)


def test_a_changed_default_is_caught():
    assert not same_default(64, 32)
    assert not same_default(0.5, None)
    assert not same_default(1, 1.0)
    assert same_default(None, [])


@pytest.mark.parametrize(
    ('task', 'config'),
    [(MAEPretrainTask, PretrainConfig), (FinetuneTask, FinetuneConfig)],
    ids=['pretrain', 'finetune'],
)
def test_lightning_task_defaults_follow_the_configuration(task, config):
    defaults = field_defaults(config)
    shared = [
        p
        for p in inspect.signature(task.__init__).parameters.values()
        if p.name in defaults
        and p.name not in DIFFERENT_MEANING
        and p.default is not inspect.Parameter.empty
    ]
    assert len(shared) >= 4
    for parameter in shared:
        assert same_default(parameter.default, defaults[parameter.name]), (
            f'{task.__name__}({parameter.name}={parameter.default!r}) but '
            f'{config.__name__}.{parameter.name} = {defaults[parameter.name]!r}'
        )


def test_options_left_at_their_default_leave_the_configuration_default():
    seen = {}

    @click.command()
    @click.option('--batch-size', type=int, default=999)
    @click.option('--seed', type=int, default=0)
    @click.pass_context
    def command(ctx: click.Context, **options: Any) -> None:
        from dspt_geo_cli.options import merge_settings

        seen.update(merge_settings(ctx, {'seed': 3}, options))

    result = CliRunner().invoke(command, ['--seed', '5'])
    assert result.exit_code == 0, result.output
    assert seen == {
        'seed': 5
    }  # batch_size left to the dataclass, the file's seed overridden


def _multi_value_command() -> click.Command:
    @click.command(cls=MultiValueCommand)
    @click.argument('task')
    @click.option('--images', cls=MultiValueOption)
    @click.option('--labels', cls=MultiValueOption)
    @click.option('--out')
    def command(**options: Any) -> None:
        click.echo(repr(sorted(options.items())))

    return command


@pytest.mark.parametrize(
    ('args', 'images', 'labels', 'out'),
    [
        (['t', '--images', 'a', 'b', '--out', 'o'], ('a', 'b'), (), 'o'),
        (
            ['t', '--images=a', 'b', '--labels', 'c', 'd', 'e'],
            ('a', 'b'),
            ('c', 'd', 'e'),
            None,
        ),
        (['--images', 'a', '--images', 'b', '--out', 'o', 't'], ('a', 'b'), (), 'o'),
        (['--images', '-x', 'b', '--', 't'], ('-x', 'b'), (), None),
    ],
)
def test_multi_value_options_take_the_words_after_them(args, images, labels, out):
    result = CliRunner().invoke(_multi_value_command(), args)
    assert result.exit_code == 0, result.output
    options = dict(eval(result.output))  # the repr of plain tuples and strings
    assert options['images'] == images
    assert options['labels'] == labels
    assert options['out'] == out
    assert options['task'] == 't'


def test_commands_with_multi_value_options_spread_them():
    for name, command in cli.commands.items():
        if any(isinstance(p, MultiValueOption) for p in command.params):
            assert isinstance(command, MultiValueCommand), name
