"""Multi-device placement (``--n-devices`` for hooked, ``--device-map`` for bridge), on a CPU machine.

There is no GPU here, so what these tests can show is limited and they say which part:

- the refusals (one clear `ModelLoadError` each), with the CUDA device count faked where needed;
- the device-moving logic on *real* heterogeneous placement: blocks on ``cpu`` and ``meta``. A
  ``meta`` tensor has no values, but an op mixing it with a ``cpu`` tensor raises, so a missing
  move fails these tests (the negative controls below show that it does). TransformerLens's own
  forward is pointed at the same split through a test double of ``get_device_for_block_index``
  (the function its forward calls before each block). Values are compared where they are real:
  the part of the model on ``cpu``;
- the bridge's ``device_map`` handed through to ``transformers``/accelerate, with an all-CPU map
  (the only one accelerate takes without a GPU): the map is realised and the logits are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hookunlearn.cli.app import app
from typer.testing import CliRunner

from hookunlearn.backends import bridge as bridge_backend
from hookunlearn.backends import hooked
from hookunlearn.errors import ModelLoadError
from hookunlearn.models import check_placement, load_model, model_info
from tests.fixtures_hf import make_tiny_tokenizer, probe_tokens, randomize_weights, tiny_config

CPU, META = torch.device("cpu"), torch.device("meta")


def _checkpoint(arch: str, out: Path, layers: int) -> Path:
    from transformers import AutoModelForCausalLM

    tokenizer = make_tiny_tokenizer()
    config = tiny_config(arch, tokenizer)
    config.num_hidden_layers = layers
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize_weights(model, 0)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint("gpt2", tmp_path_factory.mktemp("md") / "gpt2", layers=4)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint("llama", tmp_path_factory.mktemp("md") / "llama", layers=2)


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"n_devices": 2, "device": "cpu"}, "spreads the blocks over CUDA devices"),
        ({"n_devices": 0}, "whole number >= 1"),
        ({"n_devices": 2, "backend": "bridge"}, "--device-map"),
        ({"device_map": "auto", "backend": "hooked"}, "--n-devices"),
        ({"device_map": "auto", "backend": "bridge", "device": "cpu"}, "leave --device at auto"),
        ({"device_map": "everywhere", "backend": "bridge"}, "neither one of auto"),
    ],
)
def test_placement_refusals(kwargs: dict, words: str) -> None:
    with pytest.raises(ModelLoadError, match=words):
        check_placement(**kwargs)


def test_more_devices_than_visible_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_placement(device="cuda", n_devices=2) is None
    with pytest.raises(ModelLoadError, match="only 2 CUDA device"):
        check_placement(device="cuda", n_devices=3)
    with pytest.raises(ModelLoadError, match="only 2 CUDA device"):
        check_placement(device="cuda:1", n_devices=2)


def test_placement_under_torchrun_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ModelLoadError, match="under torchrun"):
        check_placement(backend="bridge", device_map="auto")
    assert check_placement() is None  # one device under torchrun stays allowed


def test_device_map_file(tmp_path: Path) -> None:
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"model.layers.0": 0, "lm_head": "cuda:1"}))
    assert check_placement(backend="bridge", device_map=str(good)) == {
        "model.layers.0": 0,
        "lm_head": "cuda:1",
    }
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="JSON object of module name"):
        check_placement(backend="bridge", device_map=str(bad))


def test_cli_refusal_is_one_line_exit_2(gpt2_dir: Path, tmp_path: Path) -> None:
    for args in (
        ["select", "--model", str(gpt2_dir), "--n-devices", "2", "--device", "cpu"],
        [
            "unlearn",
            "--model",
            str(gpt2_dir),
            "--method",
            "ga",
            "--device-map",
            "auto",
            "--backend",
            "hooked",
        ],
    ):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: --"), result.output
        assert not (tmp_path / "out").exists()


# --- the hooked backend on cpu + meta ------------------------------------------------------------


def _split_at(monkeypatch: pytest.MonkeyPatch, first_meta: int) -> None:
    """TransformerLens's block -> device rule, replaced: blocks < first_meta on cpu, the rest on meta."""
    import importlib

    tl_module = importlib.import_module("transformer_lens.HookedTransformer")
    monkeypatch.setattr(
        tl_module,
        "get_device_for_block_index",
        lambda index, cfg, device=None: CPU if index < first_meta else META,
    )


def test_place_follows_transformerlens_split(gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(gpt2_dir, device="cpu")
    _split_at(monkeypatch, 2)
    hooked.place(model, CPU, 2)
    assert model.cfg.n_devices == 2 and hooked.multi_device(model)
    assert [hooked.block_device(model, i) for i in range(4)] == [CPU, CPU, META, META]
    assert model.embed.W_E.device == CPU and model.pos_embed.W_pos.device == CPU
    assert model.unembed.W_U.device == META and model.ln_final.w.device == META
    assert hooked.hook_device(model, "blocks.1.hook_resid_post") == CPU
    assert hooked.hook_device(model, "blocks.2.hook_resid_pre") == META  # moved before block 2 runs
    assert hooked.hook_device(model, "hook_embed") == CPU
    assert hooked.hook_device(model, "ln_final.hook_normalized") == META


def test_more_devices_than_blocks_is_refused(gpt2_dir: Path) -> None:
    model = load_model(gpt2_dir, device="cpu")
    with pytest.raises(ModelLoadError, match="more than the model's 4 blocks"):
        hooked.place(model, CPU, 5)


def test_hooked_backend_moves_the_residual_to_each_block(
    gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = load_model(gpt2_dir, device="cpu")
    model = load_model(gpt2_dir, device="cpu")
    tokens = probe_tokens(reference.cfg.d_vocab, batch=2, pos=6)
    _split_at(monkeypatch, 2)
    hooked.place(model, CPU, 2)
    resid = hooked.prefix(model, tokens, 2)
    assert resid.device == CPU
    with torch.no_grad():
        assert torch.equal(resid, reference(tokens, stop_at_layer=2))  # the cpu part is real
    out = hooked.run_blocks(model, resid, 2, 4)
    assert out.device == META and out.shape == resid.shape
    overrides = hooked.block_overrides(model, 2, {"blocks.2.mlp.W_out": model.blocks[2].mlp.W_out.detach()})
    assert hooked.run_block_with(model, 2, overrides, resid).device == META
    # negative control: without the move the same call fails, so the test above can fail
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.func.functional_call(model.blocks[2], overrides, (resid,))


def test_single_device_run_block_with_moves_nothing(gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(gpt2_dir, device="cpu")
    assert not hooked.multi_device(model) and model_info(model).n_devices == 1

    def no_lookup(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a one-device model must not look up per-block devices")

    monkeypatch.setattr(hooked, "block_device", no_lookup)
    resid = torch.randn(1, 3, model.cfg.d_model)
    seen = []
    handle = model.blocks[1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        hooked.run_block_with(model, 1, {}, resid)
    finally:
        handle.remove()
    assert seen[0] is resid


def test_trainer_reference_path_across_devices(gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's no-copy reference path and both live paths on a model whose trained blocks
    straddle two devices (block 1 on cpu, blocks 2..3 on meta): every activation reaches the hooked
    block's device and the objective's loss is computed there, without a device error."""
    from hookunlearn.objectives import get_objective
    from hookunlearn.objectives.base import ObjectiveContext
    from hookunlearn.pipeline.unlearn import method_config
    from hookunlearn.tokens import tokenize_texts
    from hookunlearn.train import TrainConfig, Trainer

    # meta tensors cannot index with a boolean mask (the objective's masked MSE) unless told to
    # assume every element is set: only shapes are real on meta anyway
    monkeypatch.setattr(torch.fx.experimental._config, "meta_nonzero_assume_all_nonzero", True)
    model = load_model(gpt2_dir, device="cpu")
    _split_at(monkeypatch, 2)
    hooked.place(model, CPU, 2)
    texts = ["hello world, this is a test", "another short text here", "and one more", "the end"]
    forget, retain = tokenize_texts(model, texts), tokenize_texts(model, texts[::-1])
    objective = get_objective("rmu")(
        method_config("rmu"), ObjectiveContext(d_model=model.cfg.d_model, layer=3, seed=0)
    )
    trainer = Trainer(model, objective, layer=3, forget=forget, retain=retain, config=TrainConfig(steps=1))
    assert sorted({str(p.device) for p in trainer.params.values()}) == ["cpu", "meta"]
    assert all(trainer.initial[name].device == p.device for name, p in trainer.params.items())
    rows = torch.arange(2)
    inputs = trainer._inputs(forget.batch(rows), retain.batch(rows))
    assert inputs.forget_resid.device == inputs.retain_resid.device == inputs.retain_resid_ref.device == META
    _, total = trainer.losses(forget.batch(rows), retain.batch(rows))
    assert total.device == META and total.ndim == 0


def test_export_of_a_spread_model_verifies_on_the_cpu(gpt2_dir: Path, tmp_path: Path) -> None:
    """A model whose config says it spans several devices is verified on the CPU (the reload and a
    half-precision model's float32 twin stay there, the twin on one device). On this machine
    TransformerLens keeps every block of a CPU model on the CPU, so this runs the spread path's
    code, not a real split."""
    from hookunlearn.export import export_model

    model = load_model(gpt2_dir, device="cpu", dtype="bfloat16")
    model.cfg.n_devices = 2
    info = export_model(model, tmp_path / "export")
    assert info.verified and info.half_precision_error is not None
    assert info.max_logprob_diff is not None and info.max_logprob_diff <= info.tolerance


def test_global_grad_norm() -> None:
    from hookunlearn.train import _global_norm

    grads = [torch.tensor([3.0]), torch.tensor([4.0, 0.0])]
    assert _global_norm(grads) == pytest.approx(5.0) and _global_norm([]) == 0.0


def test_sae_goes_to_its_hooks_device(gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from hookunlearn.saes import _model_hook_device

    model = load_model(gpt2_dir, device="cpu")
    sae = StandardSAE(
        StandardSAEConfig(
            d_in=model.cfg.d_model, d_sae=8, metadata=SAEMetadata(hook_name="blocks.3.hook_resid_post")
        )
    )
    assert _model_hook_device(model, sae, CPU) == CPU  # one device: unchanged
    _split_at(monkeypatch, 2)
    hooked.place(model, CPU, 2)
    assert _model_hook_device(model, sae, CPU) == META


# --- the bridge backend --------------------------------------------------------------------------


def test_bridge_device_map_is_handed_to_transformers(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapping = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    from transformer_lens.model_bridge import TransformerBridge

    plain = load_model(llama_dir, backend="bridge", device="cpu")
    seen: list[dict] = []
    boot = TransformerBridge.boot_transformers

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return boot(*args, **kwargs)

    monkeypatch.setattr(TransformerBridge, "boot_transformers", spy)
    mapped = load_model(llama_dir, backend="bridge", device_map=str(path))
    # handed through as the map (device left out: the two are exclusive in boot_transformers);
    # transformers dispatches (hooks, hf_device_map) only a map with more than one device
    assert seen[0]["device_map"] == mapping and "device" not in seen[0]
    info = model_info(mapped)
    assert info.device_map == str(path) and info.n_devices == 1 and model_info(plain).device_map is None
    tokens = probe_tokens(int(plain.cfg.d_vocab), batch=2, pos=6)
    with torch.no_grad():
        assert torch.allclose(mapped(tokens), plain(tokens), atol=1e-6)


def test_bridge_block_loop_moves_between_devices(llama_dir: Path) -> None:
    model = load_model(llama_dir, backend="bridge", device="cpu")
    tokens = probe_tokens(int(model.cfg.d_vocab), batch=2, pos=6)
    resid = bridge_backend.prefix(model, tokens, 1)
    model.blocks[1].to(META)  # block 1 on another device than the recorded inputs and resid
    assert bridge_backend.multi_device(model)
    assert bridge_backend.block_device(model, 1) == META
    assert bridge_backend.hook_device(model, "blocks.1.hook_resid_post") == META
    assert bridge_backend.hook_device(model, "blocks.1.hook_resid_pre") == CPU
    out = bridge_backend.run_blocks(model, resid, 1, 2)
    assert out.device == META and out.shape == resid.shape
    assert bridge_backend.run_block_with(model, 1, {}, resid).device == META
    rest, named = bridge_backend._inputs_for(model, (2, 6), 1)
    with pytest.raises((RuntimeError, NotImplementedError)):  # negative control: no move, an error
        model.blocks[1](resid, *rest, **named)
