"""Every command has --help with an example, and expected failures exit non-zero with a clear line."""

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from hepzoo.cli import app

COMMANDS = [["generate"], ["train"], ["demo"], ["zoo", "list"], ["zoo", "show"], ["zoo", "release"]]
PROG = "hepzoo"


def _walk(command, ctx, path):
    """(argv path, command, context) of ``command`` and of every command and group under it."""
    yield path, command, ctx
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _walk(sub, sub.context_class(sub, info_name=name, parent=ctx), [*path, name])


def _app_commands():
    """Everything the app answers --help for, read from the app itself (a new command is covered unasked)."""
    root = typer.main.get_command(app)
    return list(_walk(root, root.context_class(root, info_name=PROG), []))


ALL_COMMANDS = [path for path, _, _ in _app_commands()]


def _flat(text: str) -> str:
    """Whitespace collapsed (rich wraps long lines of the help to the terminal width)."""
    return " ".join(text.split())


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_an_example(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_train_errors_name_the_file_or_key(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "nope.yaml" in missing.output
    config = tmp_path / "bad.yaml"
    config.write_text("model: {name: mlpf-gnnlsh}\ndata: {train: [x.root]}\nno_such_key: 1\n")
    bad = runner.invoke(app, ["train", str(config)])
    assert bad.exit_code == 1 and "no_such_key" in bad.output


def test_every_command_is_enumerated():
    """The walk reaches the top-level commands, the zoo group and the commands inside it."""
    assert [] in ALL_COMMANDS and ["zoo"] in ALL_COMMANDS
    assert all(command in ALL_COMMANDS for command in COMMANDS)
    assert len(ALL_COMMANDS) == len({tuple(path) for path in ALL_COMMANDS})


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda path: " ".join([PROG, *path]))
def test_help_of_every_command(path):
    """``--help`` exits 0 and shows the command's usage line and the first line of its docstring."""
    command, ctx = next((command, ctx) for p, command, ctx in _app_commands() if p == path)
    result = CliRunner().invoke(app, [*path, "--help"], prog_name=PROG)
    assert result.exit_code == 0, result.output
    output = _flat(result.output)
    usage = command.get_usage(ctx)
    assert usage.startswith(f"Usage: {ctx.command_path}") and _flat(usage) in output, (usage, result.output)
    assert command.help, f"{ctx.command_path}: no docstring"
    first_line = command.help.strip().splitlines()[0]
    assert _flat(first_line) in output, (first_line, result.output)


@pytest.mark.parametrize("group", [[], ["zoo"]], ids=["hepzoo", "hepzoo zoo"])
def test_unknown_command_exits_non_zero_naming_it(group):
    result = CliRunner().invoke(app, [*group, "no-such-command"], prog_name=PROG)
    assert result.exit_code != 0
    assert "No such command 'no-such-command'" in _flat(result.output), result.output
