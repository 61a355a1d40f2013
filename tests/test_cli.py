"""Every archer command has help, and every command's errors are one line with a non-zero exit."""
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from agent.cli import app


def command_names() -> list[str]:
    return sorted(c.name or c.callback.__name__ for c in app.registered_commands)


def test_the_cli_has_every_command_of_the_design():
    assert set(command_names()) >= {"init", "run", "status", "log", "show", "diff", "replay", "revert",
                                    "eval", "report", "import"}


@pytest.mark.parametrize("command", command_names())
def test_every_command_has_help(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
    assert len(result.output.strip()) > 80


@pytest.mark.parametrize("argv", [["show", "3", "--dir", "{missing}"], ["log", "{missing}"],
                                  ["eval", "{missing}/naive.py"], ["report", "{missing}", "--out", "{missing}/site"]])
def test_errors_are_one_line_and_exit_non_zero(tmp_path, argv):
    argv = [a.format(missing=tmp_path / "nowhere") for a in argv]
    done = subprocess.run([sys.executable, "-c", "from agent.cli import main; main()", *argv],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    out = (done.stdout + done.stderr).strip()
    assert out.startswith("error:") and "\n" not in out and "Traceback" not in out
