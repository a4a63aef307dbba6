"""Unit tests for hookunlearn.export: the algebra of unfolding, refusals, and failure paths.

Exports here use tiny random checkpoints (tests/fixtures_hf.py); every failure must raise
`ExportError` (or `ArtifactError` for an existing output) and leave no output directory behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer

from hookunlearn import export as export_module
from hookunlearn.architectures.gpt2 import _carry_unembed_bias
from hookunlearn.architectures.llama import _unfold_output_bias
from hookunlearn.errors import ArtifactError, HookunlearnError
from hookunlearn.export import (
    SUPPORTED_ARCHITECTURES,
    ExportError,
    ExportResult,
    TensorChange,
    export_model,
    hf_state_dict,
    read_export_info,
)
from hookunlearn.models import load_model
from tests.fixtures_hf import ARCHITECTURES, make_tiny_checkpoint, make_tiny_hf_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-unit")
    return {
        arch: make_tiny_checkpoint(arch, root / f"source-{arch}")
        for arch in ("gpt2", "llama", "qwen2", "gemma2")
    }


def _leftovers(parent: Path, name: str) -> list[str]:
    return [entry.name for entry in parent.iterdir() if entry.name.startswith(f".{name}.")]


# ---------------------------------------------------------------------------------------------
# The algebra
# ---------------------------------------------------------------------------------------------


def test_unembedding_bias_is_carried_exactly_by_a_layernorm() -> None:
    """(n + 1/d) @ (W + 1 v^T) == (w * n + b) @ W_U + b_U for any n that sums to zero."""
    generator = torch.Generator().manual_seed(0)
    d_model, d_vocab = 8, 20
    W_U = torch.randn(d_model, d_vocab, generator=generator, dtype=torch.float64)
    b_U = torch.randn(d_vocab, generator=generator, dtype=torch.float64)
    ln_weight = 1 + 0.2 * torch.randn(d_model, generator=generator, dtype=torch.float64)
    ln_bias = torch.randn(d_model, generator=generator, dtype=torch.float64)
    weight, bias, carried = _carry_unembed_bias(ln_weight, ln_bias, W_U, b_U)
    normalised = torch.randn(5, d_model, generator=generator, dtype=torch.float64)
    normalised = normalised - normalised.mean(dim=-1, keepdim=True)
    expected = (ln_weight * normalised + ln_bias) @ W_U + b_U
    actual = (weight * normalised + bias) @ carried
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)
    assert torch.equal(weight, torch.ones(d_model, dtype=torch.float64))


def test_output_bias_unfolds_into_value_biases_when_representable() -> None:
    generator = torch.Generator().manual_seed(1)
    n_heads, n_kv, d_head, d_model = 4, 2, 3, 16
    W_O = torch.randn(n_heads, d_head, d_model, generator=generator, dtype=torch.float64)
    b_V = torch.randn(n_kv, d_head, generator=generator, dtype=torch.float64)
    folded = (b_V.repeat_interleave(n_heads // n_kv, dim=0)[:, :, None] * W_O).sum((0, 1))
    unfolded = _unfold_output_bias(folded, W_O, n_kv, "test")
    refolded = (unfolded.repeat_interleave(n_heads // n_kv, dim=0)[:, :, None] * W_O).sum((0, 1))
    torch.testing.assert_close(refolded, folded, rtol=0, atol=1e-10)
    with pytest.raises(ExportError, match="fold_value_biases"):
        _unfold_output_bias(torch.randn(d_model, generator=generator, dtype=torch.float64), W_O, n_kv, "test")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_hf_state_dict_names_and_shapes_match_transformers(tmp_path: Path, arch: str) -> None:
    hf_model, _ = make_tiny_hf_model(arch)
    expected = {name: tuple(tensor.shape) for name, tensor in hf_model.state_dict().items()}
    model = load_model(make_tiny_checkpoint(arch, tmp_path / "source"), device="cpu")
    converted = {name: tuple(tensor.shape) for name, tensor in hf_state_dict(model).items()}
    assert converted == expected
    originals = hf_model.state_dict()
    for name, tensor in hf_state_dict(model).items():
        if arch == "gemma2":  # its norms go through (w + 1) - 1 in float32: round-off, not bit-exact
            torch.testing.assert_close(tensor, originals[name], rtol=0, atol=1e-6)
        else:
            assert torch.equal(tensor, originals[name]), name


def test_result_to_dict_is_json_and_frozen() -> None:
    result = ExportResult(
        path=Path("out"), architecture="gpt2", dtype="float32", verified=True, max_logprob_diff=1e-6,
        tolerance=1e-4, half_precision_error=None, reference="ref",
        changes=(TensorChange("lm_head.weight", 0.5, float("inf")),), notes=("note",),
    )  # fmt: skip
    data = json.loads(json.dumps(result.to_dict()))
    assert data["changed_tensors"]["lm_head.weight"]["relative_frobenius_change"] == "inf"
    assert result.changed_tensors == ("lm_head.weight",)
    with pytest.raises(AttributeError):
        result.verified = False  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["GPTNeoXForCausalLM", "OPTForCausalLM"])
def test_unsupported_architecture(tmp_path: Path, architecture: str) -> None:
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=8, d_head=4, d_vocab=20, act_fn="gelu",
        original_architecture=architecture,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    with pytest.raises(ExportError) as caught:
        export_model(model, tmp_path / "out")
    message = str(caught.value)
    assert architecture in message
    assert all(arch in message for arch in SUPPORTED_ARCHITECTURES)
    assert isinstance(caught.value, HookunlearnError)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(checkpoints["gpt2"], device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(ArtifactError, match="already exists"):
        export_model(model, out)
    assert (out / "keep.txt").read_text() == "old"
    export_model(model, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "hookunlearn.json").is_file()
    assert _leftovers(tmp_path, "out") == []


def test_attached_hooks_are_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(checkpoints["llama"], device="cpu")
    model.add_hook("blocks.0.hook_resid_post", lambda activation, hook: activation * 0)
    with pytest.raises(ExportError, match="reset_hooks"):
        export_model(model, tmp_path / "out")
    model.reset_hooks()
    assert export_model(model, tmp_path / "out").verified


@pytest.mark.parametrize(
    ("arch", "parameter", "match"),
    [
        ("llama", "blocks.0.attn.b_Q", "query/key/value biases"),
        ("llama", "blocks.1.mlp.b_out", "MLP biases"),
        ("gemma2", "unembed.b_U", "soft cap"),
    ],
)
def test_biases_the_architecture_lacks_are_refused(
    checkpoints: dict[str, Path], tmp_path: Path, arch: str, parameter: str, match: str
) -> None:
    model = load_model(checkpoints[arch], device="cpu")
    with torch.no_grad():
        dict(model.named_parameters())[parameter].add_(0.5)
    with pytest.raises(ExportError, match=match):
        export_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_constant_unembedding_bias_is_dropped(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(checkpoints["llama"], device="cpu")
    with torch.no_grad():
        model.unembed.b_U.add_(3.0)  # shifts every logit alike: log-probs unchanged
    result = export_model(model, tmp_path / "out")
    assert any("constant" in note for note in result.notes)
    assert result.changed_tensors == ()


def test_edited_unembedding_of_a_processed_gpt2(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """fold_ln leaves a b_U that GPT-2's lm_head cannot hold; it is carried exactly even after editing W_U."""
    model = load_model(checkpoints["gpt2"], device="cpu", processing="all")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        model.unembed.W_U.add_(
            0.1 * torch.randn(model.unembed.W_U.shape, generator=torch.Generator().manual_seed(0))
        )
    result = export_model(model, tmp_path / "out", reference=before)
    assert result.max_logprob_diff is not None and result.max_logprob_diff < 1e-4
    assert result.changed_tensors == ("lm_head.weight",)
    assert any("ln_f.bias" in note for note in result.notes)


def test_source_dir_of_another_model_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(checkpoints["gpt2"], device="cpu")
    with pytest.raises(ExportError, match="model_type 'llama'"):
        export_model(model, tmp_path / "out", source_dir=checkpoints["llama"])
    with pytest.raises(ExportError, match="is the source checkpoint"):
        export_model(model, checkpoints["gpt2"], force=True)


def test_source_config_describing_another_network_is_refused(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    model = load_model(checkpoints["gpt2"], device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((checkpoints["gpt2"] / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "n_layer": 3, "layer_norm_epsilon": 1e-3}))
    with pytest.raises(ExportError, match=r"n_layers \(model 2, config 3\).*eps"):
        export_model(model, tmp_path / "out", source_dir=other)
    assert not (tmp_path / "out").exists()


def test_metadata_must_be_json(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(checkpoints["gpt2"], device="cpu")
    with pytest.raises(ExportError, match="JSON"):
        export_model(model, tmp_path / "out", metadata={"tensor": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------
# Verification failures leave nothing behind
# ---------------------------------------------------------------------------------------------


def test_corrupted_weights_fail_verification(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = export_module._save_state_dict

    def save_corrupted(tensors, directory):  # a conversion bug, simulated after conversion
        corrupted = dict(tensors)
        corrupted["model.layers.0.mlp.down_proj.weight"] = (
            corrupted["model.layers.0.mlp.down_proj.weight"] + 0.5
        )
        return real_save(corrupted, directory)

    monkeypatch.setattr(export_module, "_save_state_dict", save_corrupted)
    model = load_model(checkpoints["llama"], device="cpu")
    with pytest.raises(ExportError, match="verification failed"):
        export_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path, "out") == []


def test_tolerance_below_round_off_fails(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(checkpoints["gpt2"], device="cpu")
    with pytest.raises(ExportError, match="tolerance 1e-12"):
        export_model(model, tmp_path / "out", tolerance=1e-12)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path, "out") == []


def test_unverified_export_says_so(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(checkpoints["qwen2"], device="cpu")
    result = export_model(model, tmp_path / "out", verify=False)
    assert not result.verified and result.max_logprob_diff is None
    info = read_export_info(tmp_path / "out")
    assert info["verification"]["performed"] is False
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        assert "model.layers.0.self_attn.v_proj.bias" in set(handle.keys())


def test_large_models_are_sharded(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "SHARD_SIZE", "20KB")
    model = load_model(checkpoints["llama"], device="cpu")
    result = export_model(model, tmp_path / "out")
    files = read_export_info(tmp_path / "out")["export"]["weight_files"]
    assert len(files) > 1 and all(name.startswith("model-") for name in files)
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert result.verified and result.changed_tensors == ()


def test_explicit_tokenizer_and_no_source(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(checkpoints["llama"], device="cpu")
    del model.hookunlearn_info  # an in-memory model: no source checkpoint to copy from
    tokenizer = AutoTokenizer.from_pretrained(checkpoints["llama"], local_files_only=True)
    result = export_model(model, tmp_path / "out", tokenizer=tokenizer)
    info = read_export_info(tmp_path / "out")
    assert info["export"]["tokenizer"] == "the tokenizer passed to export_model"
    assert info["verification"]["tokenizer_matches"] is True
    assert result.reference is None
    assert (
        json.loads((tmp_path / "out" / "config.json").read_text())["bos_token_id"] == tokenizer.bos_token_id
    )
