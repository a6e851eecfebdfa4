"""Every command has --help with an example, and expected failures exit non-zero with a clear line."""

import pytest
from typer.testing import CliRunner

from hepzoo.cli import app

COMMANDS = [["generate"], ["train"], ["demo"], ["zoo", "list"], ["zoo", "show"], ["zoo", "release"]]


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
