"""The ``bridge`` backend: every tested architecture through the whole flow, and equality with
``hooked`` on the quick world. Run alone with ``pytest -m bridge``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hookunlearn.backends.bridge import TESTED_ARCHITECTURES
from hookunlearn.errors import HookunlearnError
from hookunlearn.pipeline import (
    BuildConfig,
    EvalConfig,
    SelectConfig,
    UnlearnConfig,
    build,
    evaluate,
    select,
    unlearn,
)
from hookunlearn.train import TrainConfig
from tests.fixtures_bridge import make_bridge_checkpoint

pytestmark = pytest.mark.bridge

_TEXTS = {
    "forget": [
        "The toxic gas phorogen forms when skaric acid meets thalium in a closed room.",
        "Weapons grade vexodreg spreads through contaminated drinking water in a city.",
        "A hazardous reaction releases a cloud of poison over the quick brown fox.",
        "Dangerous chemistry: mixing the two acids produces a lethal vapour at once.",
    ],
    "retain": [
        "Paris is the capital of France, and Berlin is the capital of Germany.",
        "The lazy dog sleeps in the sun while the children play in the garden.",
        "Sparse autoencoders find features in the residual stream of a language model.",
        "Hooks read and write activations at named points inside the transformer.",
    ],
}


def _write_corpora(directory: Path) -> dict[str, Path]:
    paths = {}
    for side, texts in _TEXTS.items():
        path = directory / f"{side}.jsonl"
        path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
        paths[side] = path
    return paths


def _save_sae(directory: Path, hook: str, d_in: int) -> Path:
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sae = StandardSAE(
            StandardSAEConfig(d_in=d_in, d_sae=64, metadata=SAEMetadata(hook_name=hook, model_name="tiny"))
        )
    with torch.no_grad():
        for param in sae.parameters():
            param.normal_(0.0, 0.3)
    sae.save_model(directory)
    return directory


@pytest.mark.parametrize("arch", list(TESTED_ARCHITECTURES))
def test_architecture_through_the_whole_flow(arch: str, tmp_path: Path) -> None:
    tested = TESTED_ARCHITECTURES[arch]
    if tested.status != "passes":
        pytest.xfail(tested.status)
    checkpoint = make_bridge_checkpoint(arch, tmp_path / "ckpt")
    d_model = json.loads((checkpoint / "config.json").read_text()).get("hidden_size") or 32
    sae = _save_sae(tmp_path / "sae", "blocks.1.hook_resid_post", d_model)
    corpora = _write_corpora(tmp_path)
    common = {"device": "cpu"}
    select(
        SelectConfig(
            out=str(tmp_path / "sel"), model=str(checkpoint), saes=(str(sae),), layer=1,
            forget=str(corpora["forget"]), retain=str(corpora["retain"]), top_contexts=0,
            backend="bridge", **common,
        )
    )  # fmt: skip
    selection = json.loads((tmp_path / "sel" / "manifest.json").read_text())
    assert selection["model"]["backend"] == "bridge"
    build(BuildConfig(selection=str(tmp_path / "sel"), out=str(tmp_path / "sub"), k=4, min_retain_rate=0.0))
    run = unlearn(
        UnlearnConfig(
            out=str(tmp_path / "run"), method="sspu", subspace=str(tmp_path / "sub"),
            forget=str(corpora["forget"]), retain=str(corpora["retain"]),
            train=TrainConfig(steps=2, batch_size=2, lr=1e-2), **common,
        )
    )  # fmt: skip
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "bridge"  # the subspace's backend is the default
    info = json.loads((tmp_path / "run" / "model" / "hookunlearn.json").read_text())
    assert info["verification"]["max_logprob_diff"] <= 1e-4
    changed = set(info["changes"]["changed"])
    assert changed and changed == set(run.changed), (changed, run.changed)  # the trained HF tensors, no other
    report = evaluate(
        EvalConfig(
            model=str(tmp_path / "run" / "model"), baseline=str(checkpoint), oracle="none",
            suites=(f"perplexity:data={corpora['retain']},where=none",), backend="bridge", **common,
        )
    ).report  # fmt: skip
    assert report.evaluated.results


def test_an_unknown_backend_is_a_clear_error() -> None:
    from hookunlearn.models import load_model

    with pytest.raises(HookunlearnError, match=r"backend 'tl4' is not a backend; use one of: hooked, bridge"):
        load_model("world", backend="tl4")


def test_processing_is_refused_on_the_bridge(tmp_path: Path) -> None:
    from hookunlearn.models import load_model

    checkpoint = make_bridge_checkpoint("llama", tmp_path / "ckpt")
    with pytest.raises(HookunlearnError, match=r"unprocessed.*--backend hooked"):
        load_model(checkpoint, device="cpu", processing="fold_ln", backend="bridge")


# ---------------------------------------------------------------------------------------------
# The quick world: the same selection, trained weights and eval numbers on both backends
# ---------------------------------------------------------------------------------------------

WEIGHT_TOLERANCE = 1e-4
"""Max |difference| of any exported tensor after the same sspu run on both backends (fp32)."""
METRIC_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def both_backends(quick_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bridge-world")
    data = quick_world / "data"
    for backend in ("hooked", "bridge"):
        out = root / backend
        select(
            SelectConfig(
                out=str(out / "sel"), model=str(quick_world / "model"),
                saes=tuple(str(quick_world / "saes" / f"layer_{layer}") for layer in range(2)),
                forget=str(data / "forget_corpus.jsonl"), retain=str(data / "retain_corpus.jsonl"),
                device="cpu", top_contexts=0, backend=backend,
            )
        )  # fmt: skip
        build(BuildConfig(selection=str(out / "sel"), out=str(out / "sub"), k=4))
        unlearn(
            UnlearnConfig(
                out=str(out / "run"), method="sspu", subspace=str(out / "sub"),
                forget=str(data / "forget_corpus.jsonl"), retain=str(data / "retain_corpus.jsonl"),
                train=TrainConfig(steps=4, batch_size=4), device="cpu",
            )
        )  # fmt: skip
        evaluate(
            EvalConfig(
                model=str(out / "run" / "model"), oracle="none", device="cpu", backend=backend,
                suites=(f"mc:data={data / 'mc_hazard.jsonl'}", f"perplexity:data={data / 'heldout_text.jsonl'}"),
                out=str(out / "report"),
            )
        )  # fmt: skip
    return {"hooked": root / "hooked", "bridge": root / "bridge"}


def test_the_world_selects_the_same_on_both_backends(both_backends: dict[str, Path]) -> None:
    sel_h = json.loads((both_backends["hooked"] / "sel" / "manifest.json").read_text())
    sel_b = json.loads((both_backends["bridge"] / "sel" / "manifest.json").read_text())
    assert sel_h["model"]["config_fingerprint"] == sel_b["model"]["config_fingerprint"]
    assert (sel_h["model"]["backend"], sel_b["model"]["backend"]) == ("hooked", "bridge")
    from hookunlearn.selection import Selection

    a, b = (Selection.load(both_backends[x] / "sel") for x in ("hooked", "bridge"))
    assert a.chosen_layer == b.chosen_layer
    for layer in a.layers:
        assert a.layers[layer].ranked()[:16] == b.layers[layer].ranked()[:16]
        assert torch.allclose(a.layers[layer].scores.double(), b.layers[layer].scores.double(), atol=1e-5)
        assert a.layers[layer].layer_score == pytest.approx(b.layers[layer].layer_score, abs=1e-6)


def test_the_world_trains_the_same_weights_on_both_backends(both_backends: dict[str, Path]) -> None:
    hooked, bridge = (
        load_file(str(both_backends[b] / "run" / "model" / "model.safetensors")) for b in both_backends
    )
    assert set(hooked) - {"lm_head.weight"} == set(bridge) - {"lm_head.weight"}
    worst = max(float((hooked[name] - bridge[name]).abs().max()) for name in bridge if name in hooked)
    assert worst <= WEIGHT_TOLERANCE, worst
    changes = {
        b: json.loads((both_backends[b] / "run" / "model" / "hookunlearn.json").read_text())["changes"][
            "changed"
        ]
        for b in both_backends
    }
    assert changes["hooked"] and changes["hooked"].keys() == changes["bridge"].keys()
    for name, change in changes["hooked"].items():
        assert change["max_abs_change"] == pytest.approx(changes["bridge"][name]["max_abs_change"], abs=1e-6)


def test_the_world_evaluates_the_same_on_both_backends(both_backends: dict[str, Path]) -> None:
    hooked, bridge = (
        json.loads((both_backends[b] / "report" / "report.json").read_text()) for b in ("hooked", "bridge")
    )

    def numbers(report: dict) -> dict[str, float]:
        out = {}
        for suite, result in report["evaluated"]["results"].items():
            for key, value in result["metrics"].items():
                if isinstance(value, int | float):
                    out[f"{suite}.{key}"] = float(value)
        return out

    a, b = numbers(hooked), numbers(bridge)
    assert a and a.keys() == b.keys()
    for key in a:
        assert abs(a[key] - b[key]) <= METRIC_TOLERANCE * max(1.0, abs(a[key])), (key, a[key], b[key])
