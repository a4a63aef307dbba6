"""The HTML reports of real select, build and eval runs on the quick world (and of the shipped demo
report), opened in a headless Chromium with the network off: a non-blank screenshot, and a DOM
with the tables, the figures, the latent ids and their token highlights.

Without a browser (``chromium``, ``chromium-browser``, ``google-chrome``) the browser checks skip;
`.ci/run` installs Debian's ``chromium`` when it can."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hookunlearn.cli.app import app
from typer.testing import CliRunner

from hookunlearn.html_report import write_html_report
from hookunlearn.pipeline.build import BuildConfig, build
from hookunlearn.pipeline.eval import EvalConfig, evaluate
from hookunlearn.pipeline.select import SelectConfig, select

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _demo_dir(root: Path) -> Path:
    """A demo run directory as `hookunlearn demo` writes it (manifest, report.json, report.md)."""
    from hookunlearn.artifacts import Manifest, write_json

    directory = root / "demo"
    directory.mkdir()
    rows = [
        {
            "method": name,
            "hazard_mc": hazard,
            "benign_mc": 0.99,
            "qa_forget": forget,
            "qa_retain": 0.98,
            "seconds": 1.5,
        }
        for name, hazard, forget in (("base", 0.98, 0.99), ("oracle", 0.4, 0.08), ("sspu", 0.32, 0.97))
    ]
    write_json(directory / "report.json", {"rows": rows, "k": 32, "topic_layer": 2, "entity_layer": 2})
    (directory / "report.md").write_text("| method |\n\nColumns: a legend.\n")
    manifest = Manifest(kind="report", command="hookunlearn demo", options={})
    (directory / "manifest.json").write_text(manifest.to_json())
    return directory


@pytest.fixture(scope="module")
def runs(quick_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """select (2 layers) -> build (k 8) -> eval (probe with the subspace, the base as baseline)."""
    root = tmp_path_factory.mktemp("html")
    data = quick_world / "data"
    select(
        SelectConfig(
            out=str(root / "sel"),
            model=str(quick_world / "model"),
            saes=tuple(str(quick_world / "saes" / f"layer_{layer}") for layer in range(2)),
            forget=str(data / "forget_corpus.jsonl"),
            retain=str(data / "retain_corpus.jsonl"),
            device="cpu",
            top_contexts=4,
        )
    )
    build(BuildConfig(selection=str(root / "sel"), k=8, out=str(root / "sub")))
    model = str(quick_world / "model")
    evaluate(
        EvalConfig(
            model=model,
            baseline=model,
            oracle="none",
            suites=(f"probe:entities={data / 'entity_prompts.jsonl'}",),
            subspace=str(root / "sub"),
            device="cpu",
            out=str(root / "eval"),
        )
    )
    return {"select": root / "sel", "build": root / "sub", "eval": root / "eval"}


def _no_network_resources(page: str) -> None:
    """Nothing the page loads comes from a network: no src, stylesheet href or url() to http(s)."""
    assert not re.search(r"""\bsrc\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"""<link\b[^>]*>""", page, re.I)  # no stylesheet, font or icon links at all
    assert not re.search(r"""<script\b""", page, re.I)
    assert "@import" not in page


def test_select_build_and_eval_write_their_html_reports(runs: dict[str, Path]) -> None:
    selection = runs["select"]
    assert {"latents.json", "report.html"} <= {p.name for p in selection.iterdir()}
    latents = json.loads((selection / "latents.json").read_text())
    chosen = json.loads((selection / "manifest.json").read_text())["extra"]["chosen_layer"]
    cards = latents["layers"][str(chosen)]["latents"]
    best = cards[0]
    assert latents["top_contexts"] == 4 and 1 <= len(best["contexts"]) <= 4
    assert best["contexts"][0]["role"] in ("forget", "retain") and best["contexts"][0]["activation"] > 0
    assert len(best["logits"]["top"]) == 10 and best["neuronpedia"] is None  # the world's SAEs have no page
    features = json.loads((selection / "features.json").read_text())
    assert [c["latent"] for c in cards] == [row["latent"] for row in features[: len(cards)]]
    for run in runs.values():
        page = (run / "report.html").read_text()
        _no_network_resources(page)
        assert page.count("<table") >= 1
    assert f"latent {best['latent']}" in (selection / "report.html").read_text()
    build_page = (runs["build"] / "report.html").read_text()
    assert f"latent {best['latent']}" in build_page  # the relevant latents' cards come from the selection
    eval_page = (runs["eval"] / "report.html").read_text()
    assert "activity before and after unlearning" in eval_page and f"latent {best['latent']}" in eval_page
    assert "<h3>Each latent</h3>" in eval_page  # the per-latent before/after table


def test_report_command_rerenders_and_refuses_to_overwrite(runs: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(runs["select"])])
    assert result.exit_code == 2 and "already exists" in result.output and "--force" in result.output
    result = runner.invoke(app, ["report", str(runs["select"]), "--force"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo.html"
    result = runner.invoke(app, ["report", str(_demo_dir(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    _no_network_resources(out.read_text())
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless browser: none of {', '.join(BROWSERS)} is on PATH (.ci/run installs chromium)")


def _open(browser: str, page: Path, tmp_path: Path, name: str) -> tuple[Path, str]:
    """Screenshot and DOM of ``page`` in headless Chromium with name resolution and proxying off."""
    shot = tmp_path / f"{name}.png"
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={tmp_path / ('profile-' + name)}",
        "--window-size=1200,1600",
    ]
    subprocess.run(
        [*common, f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120
    )
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return shot, dom


def _assert_not_blank(shot: Path) -> None:
    from PIL import Image

    assert shot.is_file() and shot.stat().st_size > 0
    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 10, "the screenshot is (nearly) one colour"


def test_reports_render_in_headless_chromium(runs: dict[str, Path], tmp_path: Path) -> None:
    browser = _browser()
    selection = runs["select"]
    latents = json.loads((selection / "latents.json").read_text())
    chosen = json.loads((selection / "manifest.json").read_text())["extra"]["chosen_layer"]
    best = latents["layers"][str(chosen)]["latents"][0]["latent"]

    shot, dom = _open(browser, selection / "report.html", tmp_path, "select")
    _assert_not_blank(shot)
    assert dom.count("<table") >= 3  # layers, features, logit effects
    assert dom.count("<svg") >= 1 and 'src="data:image/png;base64,' in dom
    assert f'id="latent-{chosen}-{best}"' in dom and 'class="tok center"' in dom

    shot, dom = _open(browser, runs["eval"] / "report.html", tmp_path, "eval")
    _assert_not_blank(shot)
    assert dom.count("<table") >= 2 and dom.count("<svg") >= 1
    assert "latent_activity[forget]" in dom and f"latent {best}" in dom

    demo = tmp_path / "demo.html"
    write_html_report(_demo_dir(tmp_path), demo)
    shot, dom = _open(browser, demo, tmp_path, "demo")
    _assert_not_blank(shot)
    assert dom.count("<table") >= 1 and "<svg" in dom and "sspu" in dom
