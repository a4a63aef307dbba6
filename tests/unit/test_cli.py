from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hookunlearn.cli.app import app, user_errors
from typer.testing import CliRunner

from hookunlearn.errors import HookunlearnError

runner = CliRunner()
COMMANDS = ["select", "build", "unlearn", "eval", "export", "world", "demo"]


def test_help_lists_every_command_with_an_example() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"\n  {command} " in result.output, command
        assert f"hookunlearn {command}" in result.output, f"no example for {command}"


def test_version() -> None:
    from hookunlearn._version import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"hookunlearn {__version__}"


def test_unknown_option_is_a_usage_error() -> None:
    result = runner.invoke(app, ["demo", "--anything", "x"])
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_user_error_is_one_line_and_exit_2() -> None:
    import typer

    @user_errors()
    def failing() -> None:
        raise HookunlearnError("input 'x': bad; do y")

    with pytest.raises(typer.Exit) as info:
        failing()
    assert info.value.exit_code == 2


_PROBE = """
import json, sys
from hookunlearn.cli.app import main
argv = sys.argv[1:]
sys.argv = ["hookunlearn", *argv]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "transformer_lens", "sae_lens", "transformers", "datasets") if m in sys.modules)
print("\\nPROBE" + json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["world", "--help"], ["select", "--help"]])
def test_help_and_version_import_no_torch(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True
    ).stdout
    probe = json.loads(out.rsplit("PROBE", 1)[1])
    assert probe["code"] in (0, None)
    assert probe["heavy"] == []


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "hookunlearn", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("hookunlearn ")


def test_ctrl_c_outside_training_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    with pytest.raises(typer.Exit) as info, user_errors():
        raise KeyboardInterrupt
    assert info.value.exit_code == 130
    assert capsys.readouterr().err.startswith("error: interrupted (Ctrl-C); no output was written")


def test_usage_errors_are_one_error_line_first() -> None:
    result = runner.invoke(app, ["build", "--out", "x"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: Missing argument 'selection_dir'. See 'hookunlearn build --help'."
    ]
