"""The whole pipeline on a gemma-2-2b-shaped model on one GPU, in under 8 minutes: a session lent an
accelerator runs this and records the figures.

What it does (every stage through the same runners as the CLI, on files on disk):

1. writes a random-init Hugging Face Gemma-2 checkpoint of gemma-2-2b's shape (26 layers, d_model
   2304, 8 heads of 256 with 4 key/value heads, d_mlp 9216, vocab 256000, soft caps; bf16; the
   world tokenizer, whose ids are a subset of the vocabulary) and a random JumpReLU SAE of width
   16384 on ``blocks.12.hook_resid_post``, its thresholds set from the model's own activations so
   about 1% of latents fire;
2. ``select`` (the world's forget and retain corpora), ``build`` (k 32), ``unlearn`` (sspu, batch
   4, lr 5e-5, the export verified by reloading it with transformers), ``eval`` (the world's
   hazard MC, continuation protocol), all on ``cuda`` in ``bfloat16``;
3. writes a JSON of the figures: seconds and peak ``torch.cuda.max_memory_allocated`` per stage,
   select tokens/s, unlearn s/step, the export's verification (max |log-prob difference| and
   tolerance), eval accuracy and items/s.

It refuses clearly without CUDA. ``--device cpu --tiny`` runs the same code on a 2-layer Gemma-2
of d_model 64 with a 256-wide SAE on the CPU in float32 (a CPU test runs it, so the script cannot
rot); ``--dry-run`` prints the plan and the memory arithmetic without running anything.

    python benchmarks/gpu_check.py [--out DIR] [--steps 20]        # needs CUDA
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/check
    python benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FULL = {
    "num_hidden_layers": 26,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "vocab_size": 256000,
    "max_position_embeddings": 8192,
    "sliding_window": 4096,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
}
TINY = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "max_position_embeddings": 256,
    "sliding_window": 64,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
}
FIRING_RATE = 0.01
SEED = 0


def plan(tiny: bool, device: str, dtype: str, steps: int) -> dict[str, Any]:
    """The shapes and the memory arithmetic (parameters x bytes, the trainable slice's optimiser state)."""
    shape = TINY if tiny else FULL
    d, layers, mlp = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    heads, kv, head_dim = shape["num_attention_heads"], shape["num_key_value_heads"], shape["head_dim"]
    vocab = shape.get("vocab_size", 0)
    per_block = d * head_dim * (2 * heads + 2 * kv) + 3 * d * mlp + 4 * d
    params = layers * per_block + vocab * d + d
    width = 2 if dtype == "bfloat16" else 4
    layer = 1 if tiny else 12
    trainable = 3 * mlp * d  # mlp.W_out of layers l-2..l
    return {
        "shape": shape,
        "hook": f"blocks.{layer}.hook_resid_post",
        "layer": layer,
        "d_sae": 256 if tiny else 16384,
        "device": device,
        "dtype": dtype,
        "steps": steps,
        "parameters": params,
        "weights_gb": params * width / 1e9,
        "trainable_parameters": trainable,
        # the live tensors, their saved initial values, a last-good copy, grads, AdamW's two moments
        "trainable_state_gb": trainable * width * 6 / 1e9,
        "export_verification_gb": params * 4 * 2 / 1e9,
        "note": "the export's verification reloads the checkpoint in float32 on the CPU next to a "
        "float32 twin of the model (host memory, not GPU)",
    }


def make_checkpoint(path: Path, layer: int, tiny: bool, device: str, dtype: str) -> tuple[Path, Path]:
    """A random Gemma-2 checkpoint (world tokenizer) and a calibrated random JumpReLU SAE."""
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformers import AutoModelForCausalLM, Gemma2Config

    from hookunlearn.data import load_texts
    from hookunlearn.models import load_model

    tokenizer = load_model("world", device="cpu").tokenizer
    shape = dict(TINY if tiny else FULL)
    shape.setdefault("vocab_size", len(tokenizer))
    config = Gemma2Config(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    torch_dtype = getattr(torch, dtype)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.eval()
    model_dir = path / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)

    texts = load_texts("world:retain_corpus")[:64]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    with torch.no_grad():
        hidden = model(
            **{k: v.to(device) for k, v in encoded.items()}, output_hidden_states=True
        ).hidden_states
    acts = hidden[layer + 1][encoded["attention_mask"].to(device).bool()].float()  # block `layer`'s output
    del model, hidden
    d_model, d_sae = config.hidden_size, 256 if tiny else 16384
    sae = JumpReLUSAE(
        JumpReLUSAEConfig(
            d_in=d_model,
            d_sae=d_sae,
            device=device,
            metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_resid_post"),
        )
    )
    with torch.no_grad():
        generator = torch.Generator(device="cpu").manual_seed(SEED)
        directions = torch.randn(d_model, d_sae, generator=generator)
        directions /= directions.norm(dim=0, keepdim=True)
        sae.W_enc.copy_(directions / acts.norm(dim=1).mean().cpu())
        sae.W_dec.copy_(directions.T * acts.norm(dim=1).mean().cpu())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        pre = acts @ sae.W_enc.float()
        sae.threshold.copy_(torch.quantile(pre[:4096].cpu(), 1 - FIRING_RATE, dim=0).clamp(min=1e-3))
    sae_dir = path / "sae"
    sae.save_model(sae_dir)
    return model_dir, sae_dir


class Stage:
    """Seconds and peak CUDA memory of one stage."""

    def __init__(self, name: str, figures: dict[str, Any], cuda: bool) -> None:
        self.name, self.figures, self.cuda = name, figures, cuda

    def __enter__(self) -> Stage:
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        print(f"[gpu_check] {self.name} ...", file=sys.stderr, flush=True)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        entry = self.figures.setdefault(self.name, {})
        entry["seconds"] = time.perf_counter() - self.start
        if self.cuda:
            entry["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

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

    cuda = args.device.startswith("cuda")
    dtype = "float32" if args.tiny and not cuda else args.dtype
    info = plan(args.tiny, args.device, dtype, args.steps)
    layer = info["layer"]
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work = root / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    figures: dict[str, Any] = {}
    wall = time.perf_counter()
    common = {"device": args.device, "dtype": dtype}
    with Stage("make_checkpoint", figures, cuda):
        model_dir, sae_dir = make_checkpoint(work, layer, args.tiny, args.device, dtype)
    with Stage("select", figures, cuda):
        selected = select(
            SelectConfig(
                out=str(work / "sel"),
                model=str(model_dir),
                saes=(str(sae_dir),),
                forget="world:forget_corpus",
                retain="world:retain_corpus",
                batch_size=16,
                max_tokens=128,
                **common,
            )
        )
    roles = selected.selection.chosen.roles
    tokens = sum(stats.n for stats in roles.values())
    figures["select"].update(tokens=tokens, tokens_per_s=tokens / figures["select"]["seconds"])
    with Stage("build", figures, cuda):
        build(BuildConfig(selection=str(work / "sel"), k=32 if not args.tiny else 8, out=str(work / "sub")))
    steps: list[float] = []
    with Stage("unlearn", figures, cuda):
        unlearn(
            UnlearnConfig(
                out=str(work / "run"),
                method="sspu",
                subspace=str(work / "sub"),
                forget="world:forget_corpus",
                retain="world:retain_corpus",
                train=TrainConfig(steps=args.steps, batch_size=4, lr=5e-5),
                **common,
            ),
            progress=lambda record: steps.append(float(record["elapsed_s"])),
        )
    export = json.loads((work / "run" / "model" / "hookunlearn.json").read_text())
    verification = export.get("verification") or {}
    per_step = [b - a for a, b in zip([0.0, *steps[:-1]], steps, strict=True)]
    figures["unlearn"].update(
        steps=len(per_step),
        step_s_median=sorted(per_step[1:] or per_step)[len(per_step[1:] or per_step) // 2],
        export_verified=bool(verification.get("performed"))
        and verification.get("max_logprob_diff") is not None
        and verification["max_logprob_diff"] <= verification["tolerance"],
        export={
            k: verification.get(k)
            for k in ("performed", "max_logprob_diff", "tolerance", "half_precision_error")
        },
    )
    with Stage("eval", figures, cuda):
        report = evaluate(
            EvalConfig(
                model=str(work / "run" / "model"),
                oracle="none",
                mc=("world:mc_hazard",),
                limit=args.eval_items,
                out=str(work / "eval"),
                **common,
            )
        ).report
    results = report.evaluated.results
    figures["eval"].update(
        metrics={name: result.metrics for name, result in results.items()},
        items=args.eval_items,
        items_per_s=args.eval_items / figures["eval"]["seconds"],
    )
    payload = {
        "benchmark": "gpu_check",
        "plan": info,
        "stages": figures,
        "total_s": time.perf_counter() - wall,
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name() if cuda else None,
        "machine": platform.platform(),
        "work_dir": str(work),
        "json": str(root / "gpu_check.json"),
    }
    (root / "gpu_check.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)  # the checkpoints are GBs
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --tiny")
    parser.add_argument("--dtype", default="bfloat16", help="on CUDA (default bfloat16)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer d_model 64 Gemma-2 (CPU check)")
    parser.add_argument("--steps", type=int, default=20, help="unlearning steps (default 20)")
    parser.add_argument("--eval-items", type=int, default=100, help="hazard MC questions (default 100)")
    parser.add_argument("--out", default=None, help="where gpu_check.json goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints and run directories")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and memory arithmetic only")
    args = parser.parse_args(argv)
    if args.dry_run:
        print(json.dumps(plan(args.tiny, args.device, args.dtype, args.steps), indent=2))
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "error: gpu_check needs CUDA and torch sees no GPU here; run it on a machine with one, "
            "or check the script on the CPU with --device cpu --tiny.",
            file=sys.stderr,
        )
        return 2
    if args.device == "cpu" and not args.tiny:
        print(
            "error: --device cpu runs only the --tiny model (gemma-2-2b's shape needs a GPU).",
            file=sys.stderr,
        )
        return 2
    payload = run(args)
    stages = payload["stages"]
    print(f"{'stage':16} {'s':>8} {'peak CUDA GB':>13}  figures")
    for name, entry in stages.items():
        extra = {k: v for k, v in entry.items() if k not in ("seconds", "peak_cuda_gb", "metrics", "export")}
        peak = entry.get("peak_cuda_gb")
        print(f"{name:16} {entry['seconds']:8.1f} {'-' if peak is None else f'{peak:.2f}':>13}  {extra}")
    print(f"export: {stages['unlearn']['export']}")
    print(f"eval: {stages['eval']['metrics']}")
    print(f"total {payload['total_s']:.0f} s; wrote {payload['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
