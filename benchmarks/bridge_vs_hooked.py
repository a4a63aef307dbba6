"""The two backends side by side: the same RMU unlearning step and the same cached forward pass.

For each model, ``hooked`` (HookedTransformer) and ``bridge`` (TransformerBridge) run the shared
trainer (`hookunlearn.train.Trainer`, RMU, ``mlp.W_out`` of layers l-2..l, batch 8, AdamW) and a
select-style pass (``run_with_cache`` of one ``hook_resid_post`` with ``stop_at_layer``) on the same
batches. Each (model, backend) case runs in its own subprocess (one torch thread), so peak RSS is
per case; times are medians after warm-up. Also checked: the step-0 losses of the two backends
agree (they run the same function on the same weights).

Models: the shipped world model (4 layers, d 128, hooked layer 2) and a random-init Llama
checkpoint written here (16 layers, d 256, d_mlp 1024, vocab 320, hooked layer 4).

Run: ``python benchmarks/bridge_vs_hooked.py [--steps 20] [--warmup 3]``; writes
``benchmarks/results/bridge_vs_hooked.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bridge_vs_hooked.json"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_deep(directory: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tests.fixtures_hf import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=16,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _case(model_spec: str, backend: str, layer: int, steps: int, warmup: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from hookunlearn.data import load_texts
    from hookunlearn.models import load_model
    from hookunlearn.objectives import get_objective
    from hookunlearn.objectives.base import ObjectiveContext
    from hookunlearn.tokens import tokenize_texts
    from hookunlearn.train import TrainConfig, Trainer

    imports = _rss_mb()
    start = time.perf_counter()
    model = load_model(model_spec, device="cpu", backend=backend)
    load_s = time.perf_counter() - start
    forget = tokenize_texts(model, load_texts("world:forget_corpus")[:256], 48)
    retain = tokenize_texts(model, load_texts("world:retain_corpus")[:256], 48)
    base = _rss_mb()
    cls = get_objective("rmu")
    objective = cls(cls.Config(), ObjectiveContext(d_model=int(model.cfg.d_model), layer=layer, seed=0))
    config = TrainConfig(steps=warmup + steps, batch_size=8, lr=5e-5, grad_clip=None)
    trainer = Trainer(model, objective, layer=layer, forget=forget, retain=retain, config=config)
    stamps: list[float] = []
    trainer.run(progress=lambda record: stamps.append(time.perf_counter()))
    step_times = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][warmup:]
    hook = f"blocks.{layer}.hook_resid_post"
    batch = forget.batch(torch.arange(32))
    forward_times = []
    with torch.no_grad():
        for _ in range(warmup + steps):
            t0 = time.perf_counter()
            model.run_with_cache(
                batch.tokens, names_filter=lambda name: name == hook, stop_at_layer=layer + 1
            )
            forward_times.append(time.perf_counter() - t0)
    return {
        "backend": backend,
        "load_s": load_s,
        "step_s": statistics.median(step_times),
        "cached_forward_s": statistics.median(forward_times[warmup:]),
        "loss_step0": trainer.log[0]["loss"],
        "peak_rss_mb": _rss_mb(),
        "above_imports_mb": _rss_mb() - imports,
        "above_base_mb": _rss_mb() - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--case", nargs=3, metavar=("MODEL", "BACKEND", "LAYER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        spec, backend, layer = args.case
        print(json.dumps(_case(spec, backend, int(layer), args.steps, args.warmup)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        deep = _make_deep(Path(tmp) / "deep")
        for label, spec, layer in (
            ("world (4 layers, d 128)", "world", 2),
            ("llama 16 layers, d 256", str(deep), 4),
        ):
            cases = {}
            for backend in ("hooked", "bridge"):
                command = [sys.executable, __file__, "--case", spec, backend, str(layer)]
                command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                cases[backend] = json.loads(done.stdout.strip().splitlines()[-1])
            hooked, bridge = cases["hooked"], cases["bridge"]
            rows.append(
                {
                    "model": label,
                    "hooked": hooked,
                    "bridge": bridge,
                    "step_ratio_bridge_over_hooked": bridge["step_s"] / hooked["step_s"],
                    "forward_ratio_bridge_over_hooked": bridge["cached_forward_s"]
                    / hooked["cached_forward_s"],
                    "above_imports_ratio": bridge["above_imports_mb"] / max(hooked["above_imports_mb"], 1e-9),
                    "loss_step0_abs_diff": abs(bridge["loss_step0"] - hooked["loss_step0"]),
                }
            )
    header = "| model | step s hooked / bridge | bridge/hooked | cached forward s hooked / bridge | bridge/hooked | peak RSS MB hooked / bridge | above imports MB hooked / bridge | load s hooked / bridge | step-0 loss diff |"
    print(header)
    print("|" + "---|" * 9)
    for row in rows:
        h, b = row["hooked"], row["bridge"]
        print(
            f"| {row['model']} | {h['step_s']:.4f} / {b['step_s']:.4f} | {row['step_ratio_bridge_over_hooked']:.2f}x "
            f"| {h['cached_forward_s']:.4f} / {b['cached_forward_s']:.4f} | {row['forward_ratio_bridge_over_hooked']:.2f}x "
            f"| {h['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f} | {h['above_imports_mb']:.0f} / {b['above_imports_mb']:.0f} "
            f"| {h['load_s']:.2f} / {b['load_s']:.2f} | {row['loss_step0_abs_diff']:.1e} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"steps": args.steps, "warmup": args.warmup, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
