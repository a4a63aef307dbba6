"""docs/loading.md's backend tables are generated from the code (scripts/gen_backend_docs.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.bridge


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_backend_docs", ROOT / "scripts" / "gen_backend_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loading_docs_list_the_backends_architectures_as_the_code_does() -> None:
    generator = _generator()
    current = (ROOT / "docs" / "loading.md").read_text(encoding="utf-8")
    assert generator.rendered(current) == current, (
        "docs/loading.md is stale: run python scripts/gen_backend_docs.py"
    )


def test_every_tested_architecture_has_a_tiny_checkpoint() -> None:
    from hookunlearn.backends.bridge import TESTED_ARCHITECTURES
    from tests.fixtures_bridge import bridge_config
    from tests.fixtures_hf import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer()
    for arch in TESTED_ARCHITECTURES:
        assert bridge_config(arch, tokenizer).num_hidden_layers == 2
