"""The notebooks run end to end: 01 and 02 on the quick world, 03 in dry-run mode; and the
committed .ipynb files are exactly what ``notebooks/_build.py`` writes (no outputs).

Each notebook runs in a fresh kernel of this interpreter (an explicit kernelspec in a temporary
``JUPYTER_PATH``, so a user-level ``python3`` kernelspec cannot substitute another Python), with
the environment offline and single-threaded.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "hookunlearn-tests"
CELL_TIMEOUT_S = 300


def _load_builder():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> None:
    """A kernelspec running ``sys.executable``, found first via ``JUPYTER_PATH``; offline, one thread."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "hookunlearn tests", "language": "python"}),
        encoding="utf-8",
    )
    monkeypatch_module.setenv("JUPYTER_PATH", str(root))
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }.items():
        monkeypatch_module.setenv(name, value)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def run_notebook(
    name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> nbformat.NotebookNode:
    """Execute ``notebooks/NAME`` with ``env`` set; a first injected cell proves which Python runs it.

    ``TMPDIR`` is ``tmp_path``: what the notebook writes to temporary directories is pytest's to clean.
    """
    for key, value in {**env, "TMPDIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    check = f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix\nprint(sys.executable)"
    nb.cells.insert(0, nbformat.v4.new_code_cell(check))
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    start = time.perf_counter()
    client.execute()
    print(f"{name}: executed in {time.perf_counter() - start:.1f} s")
    return nb


def outputs_of(nb: nbformat.NotebookNode) -> tuple[str, int]:
    """All printed/displayed text of the notebook, and the number of images it drew."""
    text, images = [], 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                text.append(output["text"])
            data = output.get("data", {})
            text.append(data.get("text/markdown", "") or data.get("text/plain", ""))
            images += "image/png" in data
    return "".join(text), images


def test_committed_notebooks_match_the_builder() -> None:
    """Same cells (type, id, source) as ``_build.py`` makes, and no outputs; compared as notebooks,
    not as text, so another nbformat's JSON layout does not matter."""
    builder = _load_builder()
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(builder.NOTEBOOKS)
    for name in builder.NOTEBOOKS:
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        built = nbformat.reads(builder.render(name), as_version=4)
        cells = [(c.cell_type, c.get("id"), c.source) for c in committed.cells]
        assert cells == [(c.cell_type, c.get("id"), c.source) for c in built.cells], (
            f"{name} is stale: run python notebooks/_build.py"
        )
        code = [c for c in committed.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"


def test_recipe_dry_run_switch_is_the_first_code_cell_and_off_by_default() -> None:
    nb = nbformat.read(NOTEBOOKS / "03_real_model_recipe.ipynb", as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert 'DRY_RUN = os.environ.get("HOOKUNLEARN_DRY_RUN", "0")' in first.source
    namespace: dict[str, object] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HOOKUNLEARN_DRY_RUN", raising=False)
        exec(first.source, namespace)  # our own notebook's first cell
    assert namespace["DRY_RUN"] is False


@pytest.mark.timeout(900)
def test_quickstart(
    quick_world: Path, kernel_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"HOOKUNLEARN_WORLD": str(quick_world), "HOOKUNLEARN_STEPS": "20"}
    nb = run_notebook("01_quickstart.ipynb", env, monkeypatch, tmp_path)
    text, images = outputs_of(nb)
    assert str(quick_world) in text and "unlearning steps: 20" in text
    assert "| mc_hazard | accuracy |" in text and "| entity_qa | recall[forget] |" in text
    assert images >= 3  # scores, loss curves, before/after bars


@pytest.mark.timeout(900)
def test_inside_the_forgetting(
    quick_world: Path, kernel_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"HOOKUNLEARN_WORLD": str(quick_world), "HOOKUNLEARN_STEPS": "20"}
    nb = run_notebook("02_inside_the_forgetting.ipynb", env, monkeypatch, tmp_path)
    text, images = outputs_of(nb)
    assert "probe_target_judged_unknown" in text and "from the unknown one" in text
    assert images >= 4  # latents, centroids, logit lens, attention


@pytest.mark.timeout(900)
def test_real_model_recipe_dry_run(kernel_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nb = run_notebook("03_real_model_recipe.ipynb", {"HOOKUNLEARN_DRY_RUN": "1"}, monkeypatch, tmp_path)
    text, _ = outputs_of(nb)
    assert "DRY RUN: stand-ins in" in text and str(tmp_path) in text
    assert "| wmdp-cyber | accuracy |" in text and "| athletes_qa | recall[forget] |" in text
