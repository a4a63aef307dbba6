"""Portable checkpoint files: BOS post-processors, tokenizer configs, paths, the model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from hookunlearn.hf_files import (
    add_bos_post_processor,
    portable_path,
    portable_paths,
    portable_tokenizer_config,
    portable_tokenizer_files,
    post_processor_adds,
)
from hookunlearn.model_card import eval_summary, model_card

BOS = "<s>"


def _tokenizer(post_processor=None) -> dict:
    vocab = {BOS: 0, "a": 1, "b": 2, "Ġ": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=BOS))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if post_processor is not None:
        tokenizer.post_processor = post_processor
    return json.loads(tokenizer.to_str())


def _encode(state: dict, text: str = "a b") -> list[int]:
    return Tokenizer.from_str(json.dumps(state)).encode(text).ids


@pytest.mark.parametrize(
    "processor",
    [
        None,
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="$A", pair="$A $B:1"),
        processors.Sequence([processors.ByteLevel(trim_offsets=False)]),
    ],
    ids=["none", "bytelevel", "template", "sequence"],
)
def test_bos_post_processor_prepends_bos_once(processor) -> None:
    state = _tokenizer(processor)
    assert not post_processor_adds(state, BOS)
    with_bos = add_bos_post_processor(state, BOS, 0)
    assert post_processor_adds(with_bos, BOS)
    assert _encode(with_bos) == [0, *_encode(state)]
    assert Tokenizer.from_str(json.dumps(with_bos)).encode("a b", add_special_tokens=False).ids == _encode(
        state
    )
    assert add_bos_post_processor(with_bos, BOS, 0) == with_bos  # idempotent


def test_a_processor_with_its_own_specials_is_refused() -> None:
    state = _tokenizer(processors.BertProcessing(("b", 2), ("a", 1)))
    with pytest.raises(ValueError, match="BertProcessing"):
        add_bos_post_processor(state, BOS, 0)


def test_tokenizer_config_loses_local_state_and_gains_the_context_length() -> None:
    config = {
        "tokenizer_class": "TokenizersBackend",
        "is_local": True,
        "local_files_only": True,
        "model_max_length": 1000000000000000019884624838656,
        "bos_token": BOS,
    }
    out, changes = portable_tokenizer_config(config, 64)
    assert out == {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 64, "bos_token": BOS}
    assert len(changes) == 4
    kept, none = portable_tokenizer_config(
        {"model_max_length": 2048, "tokenizer_class": "LlamaTokenizerFast"}, 64
    )
    assert kept["model_max_length"] == 2048 and kept["tokenizer_class"] == "LlamaTokenizerFast" and not none


def test_portable_tokenizer_files_refuses_bos_without_a_token(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps(_tokenizer()))
    with pytest.raises(ValueError, match="no bos_token"):
        portable_tokenizer_files(tmp_path, bos=None, bos_id=None, want_bos=True, context_length=8)
    adds, notes = portable_tokenizer_files(tmp_path, bos=BOS, bos_id=0, want_bos=True, context_length=8)
    assert adds and any("prepends BOS" in note for note in notes)


def test_paths_become_relative_or_hashed(tmp_path: Path) -> None:
    base = tmp_path / "runs" / "export"
    assert portable_path(str(tmp_path / "runs" / "data.jsonl"), base) == "../data.jsonl"
    far = portable_path("/somewhere/else/private/model", base)
    assert far.startswith("<sha256:") and far.endswith("/model") and "somewhere" not in far
    assert portable_path("relative/x", base) == "relative/x"
    import hookunlearn

    package = Path(hookunlearn.__file__).parent
    assert (
        portable_path(str(package / "world" / "assets" / "model"), base) == "<hookunlearn>/world/assets/model"
    )
    record = {"a": [f"copied from {tmp_path}/runs/m/config.json (x)", "https://example.org/a/b"], "n": 3}
    assert portable_paths(record, base) == {
        "a": ["copied from ../m/config.json (x)", "https://example.org/a/b"],
        "n": 3,
    }


def test_model_card_metadata_and_eval_table() -> None:
    info = {
        "metadata": {
            "method": "sspu",
            "layer": 2,
            "method_options": {"steering_coeff": 4.0},
            "train": {"steps": 20, "lr": 0.001},
            "data": {"forget": {"spec": "world", "n_items": 10, "sha256": "abc123"}},
            "inputs": {"model": "world"},
            "stages": [],
        },
        "model": {"spec": "world", "source": "local", "architecture": "gpt2", "n_layers": 4, "d_model": 128},
        "export": {"architecture": "gpt2", "hf_architecture": "GPT2LMHeadModel", "dtype": "float32"},
        "verification": {"performed": True, "max_logprob_diff": 1.5e-5, "tolerance": 1e-4},
        "tokenizer_bos": {"tokenizer_adds_bos": True},
    }
    report = {
        "evaluated": {"results": {"mc_hazard": {"metrics": {"accuracy": 0.3}}}},
        "baseline": {"results": {"mc_hazard": {"metrics": {"accuracy": 0.9}}}},
        "oracle": None,
    }
    rows = eval_summary(report)
    assert rows == [{"suite": "mc_hazard", "metric": "accuracy", "base": 0.9, "value": 0.3, "oracle": None}]
    card = model_card(info, report=report)
    header = card.split("---")[1]
    assert 'forget_data_sha256: "abc123"' in header and '"unlearning-sspu"' in header
    assert "base_model" not in header.split("hookunlearn:")[0]  # the world is not a Hub model
    assert "| mc_hazard | accuracy | 0.9 | 0.3 | – |" in card
    assert "prepends BOS" in card


def test_steer_file_hookpoints_and_refusals(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from hookunlearn.errors import HookunlearnError
    from hookunlearn.interventions.steered import hf_module_for_hook, write_steer_file

    assert hf_module_for_hook("blocks.3.hook_resid_post", "gpt2") == "h.3"
    assert hf_module_for_hook("blocks.3.hook_resid_pre", "llama") == "layers.2"
    for bad in ("blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out"):
        with pytest.raises(HookunlearnError):
            hf_module_for_hook(bad, "gpt2")
    sae = SimpleNamespace(W_dec=torch.ones(4, 3), b_dec=torch.zeros(3))
    clamp = SimpleNamespace(hook="blocks.1.hook_resid_post", latents=[0, 2], multiplier=2.0)
    with pytest.raises(HookunlearnError, match="one direction per hookpoint"):
        write_steer_file(clamp, sae, "gpt2", tmp_path / "s.pt")
    with pytest.raises(HookunlearnError, match="not one of"):
        write_steer_file(clamp, sae, "gpt2", tmp_path / "s.pt", latent=1)
    with pytest.raises(HookunlearnError, match=r"\.pt"):
        write_steer_file(clamp, sae, "gpt2", tmp_path / "s.csv", latent=0)
    path = write_steer_file(clamp, sae, "gpt2", tmp_path / "s.pt", latent=2)
    entry = torch.load(path, weights_only=True)["h.1"]
    assert entry["steering_coefficient"] == pytest.approx(-2.0 * 3**0.5)
    with pytest.raises(HookunlearnError, match="exists"):
        write_steer_file(clamp, sae, "gpt2", path, latent=2)
    assert not list(tmp_path.glob(".*partial"))
