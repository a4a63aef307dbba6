"""Integration tests for hookunlearn.saes.load_sae: SAELens directories on disk, the registry path
with a converter on a Gemma-Scope-format params.npz, and every way a load can go wrong."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sae_lens import (
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig

from hookunlearn.errors import SAELoadError
from hookunlearn.processing import WeightProcessing
from hookunlearn.saes import SAEInfo, load_sae, sae_info

HOOK = "blocks.1.hook_resid_post"
GEMMA_SPEC = "gemma-scope-2b-pt-res-canonical:layer_1/width_16k/canonical"
D_MODEL, D_SAE = 32, 64


def tiny_config() -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=2,
        d_model=D_MODEL,
        n_ctx=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=100,
        act_fn="gelu",
        normalization_type="LN",
    )


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    torch.manual_seed(0)
    return HookedTransformer(tiny_config())


def randomize(sae: SAE, seed: int = 0) -> SAE:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return sae


def make_sae(
    architecture: str = "standard", hook_name: str = HOOK, d_in: int = D_MODEL, **metadata: Any
) -> SAE:
    meta = SAEMetadata(hook_name=hook_name, model_name="tiny", **metadata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if architecture == "standard":
            sae: SAE = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=D_SAE, metadata=meta))
        elif architecture == "topk":
            sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=D_SAE, k=8, metadata=meta))
        else:
            sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=D_SAE, metadata=meta))
    return randomize(sae)


def saved(sae: SAE, directory: Path) -> Path:
    sae.save_model(directory)
    return directory


# --- local directories ------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_local_round_trip(model: HookedTransformer, tmp_path: Path, architecture: str) -> None:
    original = make_sae(architecture, model_from_pretrained_kwargs={"fold_ln": True})
    directory = saved(original, tmp_path / "sae")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_sae(directory, model)
    assert not [w for w in caught if "model_from_pretrained_kwargs" in str(w.message)]

    assert type(loaded) is type(original)
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)

    info = loaded.hookunlearn_info
    assert isinstance(info, SAEInfo) and sae_info(loaded) == info
    assert info.source == "local" and info.spec == str(directory)
    assert info.path == str(directory.resolve())
    assert (info.release, info.sae_id) == (None, None)
    assert (info.hook_name, info.layer, info.d_in, info.d_sae) == (HOOK, 1, D_MODEL, D_SAE)
    assert info.architecture == architecture
    assert info.expected_processing == WeightProcessing(fold_ln=True)
    assert (info.dtype, info.device) == ("float32", "cpu")
    assert json.loads(json.dumps(info.to_dict()))["expected_processing"]["fold_ln"] is True

    x = torch.randn(3, D_MODEL)
    torch.testing.assert_close(loaded.encode(x), original.encode(x))


def test_local_string_spec_without_model(tmp_path: Path) -> None:
    directory = saved(make_sae(), tmp_path / "plain")
    loaded = load_sae(str(directory))
    assert loaded.hookunlearn_info.source == "local"
    assert loaded.W_enc.dtype == torch.float32


def test_dtype_follows_model(tmp_path: Path) -> None:
    directory = saved(make_sae("jumprelu"), tmp_path / "sae")
    bf16_model = HookedTransformer(tiny_config())
    bf16_model.to(torch.bfloat16)
    loaded = load_sae(directory, bf16_model)
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert loaded.hookunlearn_info.dtype == "bfloat16"
    _, cache = bf16_model.run_with_cache(torch.tensor([[1, 2, 3]]), names_filter=HOOK)
    assert loaded(cache[HOOK]).dtype == torch.bfloat16


def test_explicit_dtype_overrides_model(model: HookedTransformer, tmp_path: Path) -> None:
    directory = saved(make_sae(), tmp_path / "sae")
    loaded = load_sae(directory, model, dtype="float64", device="cpu")
    assert loaded.W_dec.dtype == torch.float64
    assert loaded.hookunlearn_info.dtype == "float64"


def test_misfit_checked_from_cfg_before_weights(model: HookedTransformer, tmp_path: Path) -> None:
    directory = saved(make_sae(d_in=48), tmp_path / "wide")
    # Garbage weights: the d_in check must fire from cfg.json alone.
    (directory / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(SAELoadError, match=r"d_in=48.*width 32"):
        load_sae(directory, model)


def test_unknown_hook(model: HookedTransformer, tmp_path: Path) -> None:
    directory = saved(make_sae(hook_name="blocks.1.hook_resid_pots"), tmp_path / "sae")
    with pytest.raises(SAELoadError, match=r"no such hook.*Similar hooks: blocks\.1\.hook_resid_post"):
        load_sae(directory, model)


def test_processing_mismatch(model: HookedTransformer, tmp_path: Path) -> None:
    sae = make_sae(model_from_pretrained_kwargs={"center_writing_weights": True})
    directory = saved(sae, tmp_path / "sae")
    with pytest.raises(SAELoadError) as excinfo:
        load_sae(directory, model)
    message = str(excinfo.value)
    assert "center_writing_weights: SAE expects True, model has False" in message
    assert "--processing center_writing_weights" in message
    # The same SAE loads once the model's processing matches.
    loaded = load_sae(directory, model, model_processing=WeightProcessing(center_writing_weights=True))
    assert loaded.hookunlearn_info.expected_processing.center_writing_weights


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SAELoadError, match=r"SAE directory .* does not exist"):
        load_sae(tmp_path / "absent")


def test_spec_is_a_file(tmp_path: Path) -> None:
    directory = saved(make_sae(), tmp_path / "sae")
    with pytest.raises(SAELoadError, match="is a file, not a directory.*Did you mean its directory"):
        load_sae(directory / "cfg.json")


@pytest.mark.parametrize("missing", ["cfg.json", "sae_weights.safetensors"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    directory = saved(make_sae(), tmp_path / "sae")
    (directory / missing).unlink()
    with pytest.raises(SAELoadError, match=rf"has no {missing}.*sae.save_model"):
        load_sae(directory)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    directory = saved(make_sae(), tmp_path / "sae")
    (directory / "sae_weights.safetensors").write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(SAELoadError, match=r"sae_weights\.safetensors.*not a readable safetensors file"):
        load_sae(directory)


def test_truncated_safetensors(tmp_path: Path) -> None:
    directory = saved(make_sae(), tmp_path / "sae")
    weights = directory / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(SAELoadError, match="safetensors"):
        load_sae(directory)


def test_weights_not_matching_cfg(tmp_path: Path) -> None:
    directory = saved(make_sae(), tmp_path / "sae")
    cfg = json.loads((directory / "cfg.json").read_text())
    cfg["d_sae"] = 10
    (directory / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAELoadError, match=r"(?s)could not load the SAE.*size mismatch.*matches cfg\.json"):
        load_sae(directory)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (
            json.dumps({"architecture": "standard", "metadata": {"sae_lens_version": "6.54.12"}}),
            "not a valid SAELens",
        ),
        (
            json.dumps(
                {
                    "architecture": "no-such-arch",
                    "d_in": 32,
                    "d_sae": 64,
                    "metadata": {"sae_lens_version": "6.5.0"},
                }
            ),
            "not a valid SAELens",
        ),
    ],
)
def test_malformed_cfg(tmp_path: Path, content: str, expected: str) -> None:
    directory = saved(make_sae(), tmp_path / "sae")
    (directory / "cfg.json").write_text(content)
    with pytest.raises(SAELoadError, match=expected) as excinfo:
        load_sae(directory)
    assert "cfg.json" in str(excinfo.value)


# --- registry releases ------------------------------------------------------------------------


def write_gemma_scope_npz(directory: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {
        "W_enc": rng.normal(0, 0.3, (D_MODEL, D_SAE)).astype(np.float32),
        "W_dec": rng.normal(0, 0.3, (D_SAE, D_MODEL)).astype(np.float32),
        "b_enc": rng.normal(0, 0.1, (D_SAE,)).astype(np.float32),
        "b_dec": rng.normal(0, 0.1, (D_MODEL,)).astype(np.float32),
        "threshold": rng.uniform(0.0, 0.6, (D_SAE,)).astype(np.float32),
    }
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "params.npz", **params)
    return params


def gemma_scope_converter(npz_dir: Path, calls: list[dict[str, Any]]):
    """A SAELens loader with the gemma_2 loader's output, reading params.npz from disk."""

    def converter(
        repo_id: str,
        folder_name: str,
        device: str,
        force_download: bool,
        cfg_overrides: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
        calls.append({"repo_id": repo_id, "folder_name": folder_name, "device": device})
        cfg = {
            "architecture": "jumprelu",
            "d_in": D_MODEL,
            "d_sae": D_SAE,
            "dtype": "float32",
            "model_name": "tiny",
            "hook_name": HOOK,
            "hook_head_index": None,
            "activation_fn": "relu",
            "finetuning_scaling_factor": False,
            "sae_lens_training_version": None,
            "prepend_bos": True,
            "dataset_path": "monology/pile-uncopyrighted",
            "context_size": 1024,
            "dataset_trust_remote_code": True,
            "apply_b_dec_to_input": False,
            "normalize_activations": None,
            "device": device,
        }
        cfg.update(cfg_overrides or {})
        with np.load(npz_dir / "params.npz") as data:
            state_dict = {key: torch.tensor(data[key]).to(device) for key in data}
        return cfg, state_dict, None

    return converter


def test_release_with_converter(model: HookedTransformer, tmp_path: Path) -> None:
    params = write_gemma_scope_npz(tmp_path / "npz")
    calls: list[dict[str, Any]] = []
    sae = load_sae(GEMMA_SPEC, model, converter=gemma_scope_converter(tmp_path / "npz", calls))

    lookup = get_pretrained_saes_directory()["gemma-scope-2b-pt-res-canonical"]
    folder = lookup.saes_map["layer_1/width_16k/canonical"]
    assert calls == [{"repo_id": "google/gemma-scope-2b-pt-res", "folder_name": folder, "device": "cpu"}]
    assert isinstance(sae, JumpReLUSAE)
    info = sae.hookunlearn_info
    assert info.source == "release" and info.spec == GEMMA_SPEC
    assert (info.release, info.sae_id) == ("gemma-scope-2b-pt-res-canonical", "layer_1/width_16k/canonical")
    assert info.path is None and info.architecture == "jumprelu"
    assert (info.hook_name, info.layer, info.d_in, info.d_sae) == (HOOK, 1, D_MODEL, D_SAE)
    assert info.expected_processing == WeightProcessing()

    _, cache = model.run_with_cache(torch.tensor([[5, 6, 7, 8]]), names_filter=HOOK)
    x = cache[HOOK][0]
    w_enc, w_dec = torch.from_numpy(params["W_enc"]), torch.from_numpy(params["W_dec"])
    b_enc, b_dec = torch.from_numpy(params["b_enc"]), torch.from_numpy(params["b_dec"])
    threshold = torch.from_numpy(params["threshold"])
    pre = x @ w_enc + b_enc  # Gemma Scope: no b_dec subtraction on the way in
    expected_acts = torch.relu(pre) * (pre > threshold)
    assert 0 < int((expected_acts > 0).sum()) < expected_acts.numel()  # the threshold really cuts
    acts = sae.encode(x)
    torch.testing.assert_close(acts, expected_acts)
    torch.testing.assert_close(sae.decode(acts), expected_acts @ w_dec + b_dec)


def test_release_converter_misfit(model: HookedTransformer, tmp_path: Path) -> None:
    write_gemma_scope_npz(tmp_path / "npz")
    calls: list[dict[str, Any]] = []
    converter = gemma_scope_converter(tmp_path / "npz", calls)
    # With a converter the config comes from it; the check still runs before the SAE is returned.
    with pytest.raises(SAELoadError, match="center_writing_weights: SAE expects False, model has True"):
        load_sae(GEMMA_SPEC, model, converter=converter, model_processing="center_writing_weights")


def test_release_dtype_follows_model(tmp_path: Path) -> None:
    write_gemma_scope_npz(tmp_path / "npz")
    bf16_model = HookedTransformer(tiny_config())
    bf16_model.to(torch.bfloat16)
    sae = load_sae(GEMMA_SPEC, bf16_model, converter=gemma_scope_converter(tmp_path / "npz", []))
    assert sae.W_enc.dtype == torch.bfloat16 and sae.threshold.dtype == torch.bfloat16
    assert sae_info(sae).dtype == "bfloat16"


@pytest.mark.timeout(30)
def test_offline_release_without_converter_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(SAELoadError) as excinfo:
        load_sae(GEMMA_SPEC)
    assert time.monotonic() - start < 20
    message = str(excinfo.value)
    assert "could not download SAE" in message and "google/gemma-scope-2b-pt-res" in message
    assert "HF_HUB_OFFLINE" in message and "local SAELens directory" in message
    assert "(in Python, converter=" in message  # not advice a CLI user can follow (issue 17 item 13)


@pytest.mark.timeout(30)
def test_offline_sae_lens_format_release_with_model_fails_fast(model: HookedTransformer) -> None:
    # gpt2-small-res-jb needs its cfg.json from the Hub even for the pre-load check.
    with pytest.raises(SAELoadError, match="could not download SAE 'gpt2-small-res-jb"):
        load_sae("gpt2-small-res-jb:blocks.1.hook_resid_pre", model)
