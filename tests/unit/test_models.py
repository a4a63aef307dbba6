"""Unit tests for hookunlearn.models: options, specs, errors, fingerprints, processing records.

Everything is offline. Checkpoints are tiny random ones from tests/fixtures_hf.py, built once
per module; loads that must fail are refused before any weights are read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import huggingface_hub
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from hookunlearn import models
from hookunlearn.errors import HookunlearnError, ModelLoadError
from hookunlearn.models import (
    SUPPORTED_MODEL_TYPES,
    ModelInfo,
    config_fingerprint,
    effective_processing,
    load_model,
    model_info,
    resolve_device,
    resolve_dtype,
)
from hookunlearn.processing import WeightProcessing
from tests.fixtures_hf import make_tiny_checkpoint

# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid tiny Llama checkpoint; tests copy it before breaking it."""
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("ckpt") / "tiny")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(path: Path, **changes: object) -> None:
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config))


def _tiny_cfg(**overrides: object) -> HookedTransformerConfig:
    fields: dict[str, object] = {
        "n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32, "d_vocab": 50,
        "n_ctx": 16, "act_fn": "gelu_new", "normalization_type": "LN", "device": "cpu",
        "original_architecture": "GPT2LMHeadModel",
    }  # fmt: skip
    fields.update(overrides)
    return HookedTransformerConfig.from_dict(fields)


# ---------------------------------------------------------------------------------------------
# dtype / device
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("float32", torch.float32), ("fp32", torch.float32), ("FP32", torch.float32),
        ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16), ("torch.bfloat16", torch.bfloat16),
        ("float16", torch.float16), ("fp16", torch.float16), ("half", torch.float16),
        (torch.float16, torch.float16),
    ],
)  # fmt: skip
def test_resolve_dtype_accepts_names_and_aliases(text: str | torch.dtype, expected: torch.dtype) -> None:
    assert resolve_dtype(text) is expected


@pytest.mark.parametrize("bad", ["int8", "float64", "fp8", "", "bfloat"])
def test_resolve_dtype_rejects_others_listing_choices(bad: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        resolve_dtype(bad)
    message = str(info.value)
    assert repr(bad) in message
    for choice in ("float32", "bfloat16", "float16"):
        assert choice in message


def test_resolve_dtype_rejects_other_torch_dtypes() -> None:
    with pytest.raises(ModelLoadError, match="float64"):
        resolve_dtype(torch.float64)


def test_resolve_device_cpu_and_auto_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_resolve_device_auto_takes_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA:1"])
def test_resolve_device_cuda_unavailable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        resolve_device(device)


def test_resolve_device_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ModelLoadError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda0", "tpu", ""])
def test_resolve_device_rejects_non_device_names(bad: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        resolve_device(bad)
    assert "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'" in str(info.value)


def test_load_model_checks_options_before_loading(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="dtype 'int4'"):
        load_model(llama_dir, dtype="int4")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_model(llama_dir, device="cuda")
    with pytest.raises(HookunlearnError, match="unknown flag"):
        load_model(llama_dir, processing="fold_everything")


# ---------------------------------------------------------------------------------------------
# Specs that are neither a checkpoint nor a known name
# ---------------------------------------------------------------------------------------------


def test_unknown_spec_suggests_close_names() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model("gpt-2", device="cpu")
    message = str(info.value)
    assert "'gpt-2'" in message
    assert "neither an existing directory nor a known TransformerLens model name" in message
    assert "Did you mean: gpt2" in message


def test_unknown_spec_without_close_names_has_no_suggestion() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model("zzzz-qqqq-nothing-like-it", device="cpu")
    assert "Did you mean" not in str(info.value)


def test_missing_path_is_reported_as_unknown_spec(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither an existing directory"):
        load_model(tmp_path / "does-not-exist", device="cpu")


def test_a_file_is_not_a_checkpoint(llama_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a file, not a directory"):
        load_model(llama_dir / "config.json", device="cpu")


# ---------------------------------------------------------------------------------------------
# Official names, offline
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline, with an empty HF cache: no official model can be found locally."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("spec", "official"), [("gpt2", "gpt2"), ("gpt2-small", "gpt2"), ("gemma-2-2b", "google/gemma-2-2b")]
)
def test_official_name_offline_fails_fast(
    empty_hub_cache: Path, monkeypatch: pytest.MonkeyPatch, spec: str, official: str
) -> None:
    def must_not_be_called(*args: object, **kwargs: object) -> None:
        raise AssertionError("from_pretrained was called although the model is not cached")

    monkeypatch.setattr(HookedTransformer, "from_pretrained", must_not_be_called)
    with pytest.raises(ModelLoadError) as info:
        load_model(spec, device="cpu")
    message = str(info.value)
    assert f"model {spec!r}" in message
    assert "could not be downloaded from the Hugging Face Hub" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert f"'{official}'" in message
    assert "Pass a local checkpoint directory instead" in message


@pytest.mark.parametrize(
    "error",
    [OSError("We couldn't connect to 'https://huggingface.co'"), httpx.ConnectError("connection refused")],
)
def test_official_download_errors_become_model_load_errors(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(HookedTransformer, "from_pretrained", unreachable)
    with pytest.raises(ModelLoadError, match="could not be downloaded from the Hugging Face Hub") as info:
        load_model("gpt2", device="cpu")
    assert info.value.__cause__ is error


def test_official_model_needing_remote_code_is_refused_without_consent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_be_called(*args: object, **kwargs: object) -> None:
        raise AssertionError("from_pretrained was called without trust_remote_code consent")

    monkeypatch.setattr(HookedTransformer, "from_pretrained", must_not_be_called)
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model("Qwen/Qwen-1_8B", device="cpu")


# ---------------------------------------------------------------------------------------------
# Local directories that are not loadable checkpoints
# ---------------------------------------------------------------------------------------------


def test_directory_without_config_json(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path, device="cpu")
    assert str(tmp_path) in str(info.value)
    assert "no config.json" in str(info.value)


def test_config_json_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": ')
    with pytest.raises(ModelLoadError, match="config.json is not valid JSON"):
        load_model(tmp_path, device="cpu")


@pytest.mark.parametrize("model_type", ["gpt_neox", "bert", None])
def test_unsupported_model_type(tmp_path: Path, model_type: str | None) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type} if model_type else {}))
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path, device="cpu")
    message = str(info.value)
    assert str(tmp_path) in message
    assert (repr(model_type) if model_type else "no model_type") in message
    for supported in SUPPORTED_MODEL_TYPES:
        assert supported in message


def test_missing_weights_file(llama_dir: Path, tmp_path: Path) -> None:
    path = _copy(llama_dir, tmp_path / "no-weights")
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="has no weights file") as info:
        load_model(path, device="cpu")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_weights_file(llama_dir: Path, tmp_path: Path, damage: str) -> None:
    path = _copy(llama_dir, tmp_path / "corrupt")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        b"this is not a safetensors file" * 50 if damage == "garbage" else data[: len(data) // 2]
    )
    with pytest.raises(ModelLoadError) as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert str(path) in message
    assert "model.safetensors" in message
    assert "could not read the weights" in message


def test_weights_that_do_not_match_the_config(llama_dir: Path, tmp_path: Path) -> None:
    path = make_tiny_checkpoint("gpt2", tmp_path / "gpt2-weights")
    shutil.copy(llama_dir / "config.json", path / "config.json")  # a Llama config over GPT-2 weights
    with pytest.raises(ModelLoadError, match="lacks .* parameter"):
        load_model(path, device="cpu")


def test_missing_tokenizer(llama_dir: Path, tmp_path: Path) -> None:
    path = _copy(llama_dir, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).unlink()
    with pytest.raises(
        ModelLoadError, match="has no tokenizer: none of tokenizer.json, tokenizer_config.json"
    ):
        load_model(path, device="cpu")


@pytest.mark.parametrize(
    ("changes", "feature"),
    [
        ({"attention_bias": True}, "attention_bias=True"),
        ({"mlp_bias": True}, "mlp_bias=True"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "'linear'"),
        ({"hidden_act": "quick_gelu"}, "'quick_gelu'"),
    ],
)
def test_features_the_conversion_would_get_wrong_are_refused(
    llama_dir: Path, tmp_path: Path, changes: dict[str, object], feature: str
) -> None:
    path = _copy(llama_dir, tmp_path / "odd")
    _edit_config(path, **changes)
    with pytest.raises(ModelLoadError) as info:
        load_model(path, device="cpu")
    assert feature in str(info.value)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# trust_remote_code is never turned on by itself
# ---------------------------------------------------------------------------------------------

_EVIL_CODE = """
from pathlib import Path
Path(__file__).with_name("REMOTE_CODE_RAN").write_text("yes")
from transformers import LlamaConfig
class EvilConfig(LlamaConfig):
    model_type = "evil"
"""


def _add_remote_code(path: Path, model_type: str) -> None:
    (path / "configuration_evil.py").write_text(_EVIL_CODE)
    _edit_config(
        path,
        model_type=model_type,
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "configuration_evil.Evil",
        },
    )


def test_custom_model_type_with_remote_code_is_refused_without_running_it(
    llama_dir: Path, tmp_path: Path
) -> None:
    path = _copy(llama_dir, tmp_path / "evil")
    _add_remote_code(path, model_type="evil")
    with pytest.raises(ModelLoadError, match="model_type 'evil'"):
        load_model(path, device="cpu")
    assert not (path / "REMOTE_CODE_RAN").exists()


def test_native_model_type_ignores_auto_map_and_passes_trust_false(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy(llama_dir, tmp_path / "native")
    _add_remote_code(path, model_type="llama")
    seen: list[tuple[str, object]] = []
    for name in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"):
        auto_class = getattr(models, name)
        original = auto_class.from_pretrained

        def spy(*args: object, _name: str = name, _original: object = original, **kwargs: object) -> object:
            seen.append((_name, kwargs.get("trust_remote_code")))
            return _original(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(auto_class, "from_pretrained", spy)
    model = load_model(path, device="cpu")
    assert model_info(model).architecture == "llama"
    assert not (path / "REMOTE_CODE_RAN").exists()
    assert {name for name, _ in seen} == {"AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"}
    # None: not passed (TransformerLens re-reads the tokenizer itself); transformers' default is False.
    assert all(value in (False, None) for _, value in seen), seen


# ---------------------------------------------------------------------------------------------
# Fingerprints and processing records
# ---------------------------------------------------------------------------------------------


def test_fingerprint_ignores_device_dtype_seed_and_names() -> None:
    base = config_fingerprint(_tiny_cfg())
    assert len(base) == 16
    int(base, 16)
    assert config_fingerprint(_tiny_cfg(dtype=torch.bfloat16, seed=3, model_name="other")) == base
    assert config_fingerprint(_tiny_cfg(tokenizer_name="somewhere", default_prepend_bos=False)) == base


def test_fingerprint_treats_folded_norm_as_the_same_architecture() -> None:
    assert config_fingerprint(_tiny_cfg(normalization_type="LNPre")) == config_fingerprint(_tiny_cfg())
    assert config_fingerprint(_tiny_cfg(normalization_type="RMSPre")) == config_fingerprint(
        _tiny_cfg(normalization_type="RMS")
    )


@pytest.mark.parametrize(
    "change",
    [{"n_layers": 3}, {"d_vocab": 51}, {"act_fn": "relu"}, {"normalization_type": "RMS"}, {"n_ctx": 32},
     {"original_architecture": "LlamaForCausalLM"}, {"positional_embedding_type": "rotary"}],
)  # fmt: skip
def test_fingerprint_changes_with_architecture(change: dict[str, object]) -> None:
    assert config_fingerprint(_tiny_cfg(**change)) != config_fingerprint(_tiny_cfg())


def test_effective_processing_follows_what_transformer_lens_applies() -> None:
    everything = WeightProcessing.parse("all")
    assert effective_processing(_tiny_cfg(), "all") == everything
    rms = effective_processing(_tiny_cfg(normalization_type="RMS", final_rms=True), everything)
    assert rms == WeightProcessing(fold_ln=True, center_unembed=True, fold_value_biases=True)
    capped = effective_processing(
        _tiny_cfg(normalization_type="RMS", final_rms=True, output_logits_soft_cap=30.0), everything
    )
    assert capped == WeightProcessing(fold_ln=True, fold_value_biases=True)
    assert effective_processing(_tiny_cfg(), None) == WeightProcessing()


def test_model_info_for_a_model_built_in_memory() -> None:
    torch.manual_seed(0)
    model = HookedTransformer(_tiny_cfg(init_weights=True))
    info = model_info(model)
    assert info.source == "in-memory"
    assert info.architecture == "gpt2"
    assert info.processing == WeightProcessing()
    assert info.device == "cpu"
    assert info.dtype == "float32"
    assert info.config_fingerprint == config_fingerprint(model.cfg)
    assert (info.n_layers, info.d_model) == (2, 16)


def test_model_info_infers_processing_of_an_in_memory_model() -> None:
    torch.manual_seed(0)
    model = HookedTransformer(_tiny_cfg(init_weights=True))
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for name in state:  # non-trivial norms and biases, so every processing step does something
        if name.endswith((".b_V", ".b_O", ".b_U", ".ln1.b", ".ln2.b", "ln_final.b")):
            state[name] = 0.1 * torch.randn_like(state[name])
    model.load_and_process_state_dict(state, **WeightProcessing.parse("all").to_kwargs())
    assert model_info(model).processing == WeightProcessing.parse("all")


def test_model_info_to_dict_is_json_ready() -> None:
    info = ModelInfo(
        spec="x", name="/abs/x", source="local", architecture="llama", hf_model_type="llama",
        processing=WeightProcessing(fold_ln=True), requested_processing=WeightProcessing.parse("all"),
        device="cpu", dtype="float32", config_fingerprint="0" * 16, n_layers=2, d_model=32,
    )  # fmt: skip
    data = json.loads(json.dumps(info.to_dict()))
    assert data["processing"] == {
        "fold_ln": True, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False,
    }  # fmt: skip
    assert data["requested_processing"]["center_unembed"] is True
    assert data["config_fingerprint"] == "0" * 16
    with pytest.raises(AttributeError):
        info.spec = "y"  # type: ignore[misc]
