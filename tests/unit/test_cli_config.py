"""``--config FILE`` / ``--recipe NAME`` on every command: defaults from a file, flags win, and
the effective configuration lands in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hookunlearn.cli.app import app
from typer.testing import CliRunner

runner = CliRunner()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_every_command_accepts_config_and_recipe() -> None:
    for argv in (
        ["select"],
        ["build"],
        ["unlearn"],
        ["eval"],
        ["export"],
        ["demo"],
        ["world", "build"],
        ["world", "info"],
    ):
        result = runner.invoke(app, [*argv, "--help"])
        assert result.exit_code == 0, argv
        assert "--config FILE" in result.output and "--recipe NAME" in result.output, argv


def test_config_values_are_defaults_and_flags_override_them(tmp_path: Path) -> None:
    config = _write(tmp_path / "run.toml", '[eval]\nprotocol = "bogus"\n')
    result = runner.invoke(app, ["eval", "world", "--config", str(config)])
    assert result.exit_code == 2 and "--protocol 'bogus'" in result.output
    result = runner.invoke(app, ["eval", "world", "--config", str(config), "--protocol", "letterx"])
    assert result.exit_code == 2 and "'letterx'" in result.output and "bogus" not in result.output


def test_yaml_config_and_dashed_keys(tmp_path: Path) -> None:
    config = _write(tmp_path / "run.yaml", "eval:\n  list-suites: true\n")
    result = runner.invoke(app, ["eval", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "gsm8k:" in result.output and "probe:" in result.output


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "[eval]\nprotokol = 1\n", "has no option 'protokol'; options of `hookunlearn eval`"),
        ("bad.toml", "[eval\n", "not valid TOML"),
        ("bad.yaml", "eval: [1, 2\n", "not valid YAML"),
        ("bad.ini", "[eval]\n", "unknown config format '.ini'"),
        ("bad.toml", "eval = 3\n", "[eval] must be a table"),
    ],
)
def test_bad_config_files_are_clear_usage_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    config = _write(tmp_path / name, text)
    result = runner.invoke(app, ["eval", "world", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["eval", "world", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_effective_config_is_written_into_the_manifest(tmp_path: Path) -> None:
    config = _write(tmp_path / "run.toml", "[eval]\nbatch_size = 7\nqa = ['world:entity_qa']\n")
    out = tmp_path / "report"
    argv = ["eval", "world", "--config", str(config), "--limit", "3", "--device", "cpu", "--out", str(out)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    effective = manifest["config"]
    assert effective["command"] == "hookunlearn eval" and effective["config_file"] == str(config)
    assert effective["values"]["batch_size"] == 7 and effective["sources"]["batch_size"] == "config"
    assert effective["values"]["limit"] == 3 and effective["sources"]["limit"] == "commandline"
    assert effective["sources"]["protocol"] == "default"
    report = json.loads((out / "report.json").read_text())
    assert report["evaluated"]["results"]["entity_qa"]["n"]["recall[retain]"] == 3
