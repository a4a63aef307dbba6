"""The documentation: the CLI reference is generated from the Typer app and current, the site
builds with mkdocs-material in strict mode (offline), and every relative link in the Markdown
points to a file that exists."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "scripts" / "gen_cli_docs.py"
CLI_DOC = ROOT / "docs" / "cli.md"
MARKDOWN = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs
    )


def test_cli_reference_is_up_to_date() -> None:
    result = _run(str(GENERATOR), "--check")
    assert result.returncode == 0, (
        "docs/cli.md is stale: run `make docs` (or python scripts/gen_cli_docs.py)\n"
        + result.stdout
        + result.stderr
    )


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text("# CLI reference\n\nout of date\n", encoding="utf-8")
    result = _run(str(GENERATOR), "--check", "--out", str(stale))
    assert result.returncode == 1
    assert "out of date" in result.stderr and "gen_cli_docs.py" in result.stderr


def _command_paths() -> list[str]:
    import typer
    from hookunlearn.cli.app import app

    def walk(command, name: str, parent) -> list[str]:
        ctx = command.context_class(command, info_name=name, parent=parent)
        paths = [ctx.command_path]
        if hasattr(command, "list_commands"):
            for sub_name in command.list_commands(ctx):
                sub = command.get_command(ctx, sub_name)
                if sub is not None and not sub.hidden:
                    paths += walk(sub, sub_name, ctx)
        return paths

    return walk(typer.main.get_command(app), "hookunlearn", None)


def test_every_command_is_in_the_cli_reference() -> None:
    paths = _command_paths()
    assert "hookunlearn world build" in paths and "hookunlearn eval" in paths
    text = CLI_DOC.read_text(encoding="utf-8")
    for path in paths:
        assert re.search(rf"^#+ {re.escape(path)}$", text, re.M), f"no section for `{path}` in docs/cli.md"
        assert f"\n{path} [OPTIONS]" in text, f"no usage line for `{path}` in docs/cli.md"


def test_mkdocs_builds_strict_offline(tmp_path: Path) -> None:
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' to build the docs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = _run(
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(tmp_path / "site"),
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "cli" / "index.html").is_file()


def _relative_links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL (http:, mailto:, ...) or an anchor on the same page
        targets.append(target)
    return targets


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path: Path) -> None:
    missing = []
    for target in _relative_links(path):
        file = target.split("#", 1)[0].split("?", 1)[0]
        if file and not (path.parent / file).exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_the_link_scanner_sees_links() -> None:
    links = _relative_links(ROOT / "docs" / "index.md")
    assert "getting_started.md" in links and "methods/index.md" in links
