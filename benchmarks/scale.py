"""Real model sizes through select, unlearn and eval, side by side with the WMDP-style reference loop.

Random-init models of real architectures at their real size (the world tokenizer's ids; the
vocabulary, and so the embedding and unembedding, at the real size):

- on CPU (float32): ``gpt2-small`` (12 layers, d_model 768, 124M parameters, hooked layer 6) and
  ``deep24`` (gpt2-medium's shape: 24 layers, d_model 1024, d_mlp 4096, 355M parameters, hooked
  layer 7 as in WMDP's RMU);
- on CUDA (bfloat16, only with ``--gpu``): ``gemma-2-2b`` (26 layers, d_model 2304, hooked layer 12)
  and ``llama-3-8b`` (32 layers, d_model 4096, GQA 32/8, d_mlp 14336, vocab 128256, hooked layer 7).

Phases, each in its own subprocess (peak memory is per phase: ``ru_maxrss`` on CPU,
``torch.cuda.max_memory_allocated`` on CUDA):

- ``select``: `hookunlearn.selection.corpus_stats` at the hooked layer with a random JumpReLU SAE
  (width 16x d_model, capped at 24576), second moments on, over about ``--select-tokens`` tokens
  of the world corpora: tokens/s;
- ``ours``: RMU through `hookunlearn.pipeline.unlearn.unlearn_model` (the shared trainer), batch 4
  (RMU's), ``mlp.W_out`` of layers l-2..l, AdamW lr 5e-5, no clipping: s/step, tokens/s;
- ``reference``: the same RMU step as WMDP's ``rmu/unlearn.py`` structures it (the updated model's
  full forward on forget and retain with grad, a full frozen ``deepcopy`` for the retain
  reference): ``benchmarks/unlearn_step.py``'s ``manual_steps``, reused as is;
- ``eval``: `hookunlearn.evaluation.mc.evaluate_mc` (continuation protocol) on ``--eval-items``
  world hazard questions: s, items/s, tokens/s.

Every phase imports the same modules first, so the peak-memory ratio compares the work, not the
imports; "above imports" subtracts the resident size right after them. The step-0 losses of ours
and the reference are checked to agree (same loss, data and control vector). The goal judged here:
ours' peak <= 0.6x the reference's on ``deep24`` (where the model, not the ~0.6 GB of imports,
dominates the process). Prints a table and writes JSON (default: benchmarks/results/scale.json).

    python benchmarks/scale.py [--models gpt2-small,deep24] [--steps 3] [--warmup 1] [--threads 2]
    python benchmarks/scale.py --gpu            # gemma-2-2b and llama-3-8b shapes, cuda + bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

MODELS: dict[str, dict] = {
    "gpt2-small": {
        "device": "cpu",
        "dtype": "float32",
        "layer": 6,
        "cfg": {
            "n_layers": 12,
            "d_model": 768,
            "n_heads": 12,
            "d_head": 64,
            "d_mlp": 3072,
            "d_vocab": 50257,
            "n_ctx": 1024,
            "act_fn": "gelu_new",
            "normalization_type": "LN",
        },
    },
    "deep24": {
        "device": "cpu",
        "dtype": "float32",
        "layer": 7,
        "cfg": {
            "n_layers": 24,
            "d_model": 1024,
            "n_heads": 16,
            "d_head": 64,
            "d_mlp": 4096,
            "d_vocab": 50257,
            "n_ctx": 1024,
            "act_fn": "gelu_new",
            "normalization_type": "LN",
        },
    },
    "gemma-2-2b": {
        "device": "cuda",
        "dtype": "bfloat16",
        "layer": 12,
        "cfg": {
            "n_layers": 26,
            "d_model": 2304,
            "n_heads": 8,
            "d_head": 256,
            "n_key_value_heads": 4,
            "d_mlp": 9216,
            "gated_mlp": True,
            "d_vocab": 256000,
            "n_ctx": 8192,
            "act_fn": "gelu_pytorch_tanh",
            "normalization_type": "RMS",
            "positional_embedding_type": "rotary",
            "rotary_dim": 256,
            "use_normalization_before_and_after": True,
            "attn_scores_soft_cap": 50.0,
            "output_logits_soft_cap": 30.0,
        },
    },
    "llama-3-8b": {
        "device": "cuda",
        "dtype": "bfloat16",
        "layer": 7,
        "cfg": {
            "n_layers": 32,
            "d_model": 4096,
            "n_heads": 32,
            "d_head": 128,
            "n_key_value_heads": 8,
            "d_mlp": 14336,
            "gated_mlp": True,
            "d_vocab": 128256,
            "n_ctx": 8192,
            "act_fn": "silu",
            "normalization_type": "RMS",
            "positional_embedding_type": "rotary",
            "rotary_dim": 128,
            "rotary_base": 500000.0,
            "final_rms": True,
        },
    },
}
CPU_MODELS = ("gpt2-small", "deep24")
GPU_MODELS = ("gemma-2-2b", "llama-3-8b")
PHASES = ("select", "ours", "reference", "eval")
BATCH = 4
SEED = 0
LOSS_TOL = 1e-3


# --- child: one (model, phase) ----------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_model(name: str):  # noqa: ANN201
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from hookunlearn.kernels import fuse_kernels
    from hookunlearn.models import load_model

    spec = MODELS[name]
    tokenizer = load_model("world", device="cpu").tokenizer
    dtype = getattr(torch, spec["dtype"])
    cfg = HookedTransformerConfig(**spec["cfg"], device=spec["device"], dtype=dtype, seed=SEED)
    torch.manual_seed(SEED)
    with torch.device(spec["device"]):  # created where it runs: no CPU copy of a GPU model
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    fuse_kernels(model)  # as load_model does for every checkpoint (both loops run on this model)
    model.eval()
    return model


def random_sae(model, layer: int):  # noqa: ANN001, ANN201
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    d_model = model.cfg.d_model
    d_sae = min(16 * d_model, 24576)
    config = JumpReLUSAEConfig(
        d_in=d_model,
        d_sae=d_sae,
        dtype=str(model.cfg.dtype).removeprefix("torch."),
        device=str(model.cfg.device),
        metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_resid_post"),
    )
    sae = JumpReLUSAE(config)
    with torch.no_grad():
        for param in sae.parameters():
            param.normal_(0, 1 / d_model**0.5)
        sae.threshold.fill_(0.5)
        sae.b_enc.zero_()
    return sae


def child(name: str, phase: str, args: argparse.Namespace) -> dict:
    import resource
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    # the same imports in every phase: the memory ratio then compares the work
    from unlearn_step import RMU_OPTIONS, manual_steps

    from hookunlearn.data import load_records, load_texts
    from hookunlearn.evaluation.mc import evaluate_mc, parse_questions
    from hookunlearn.pipeline.unlearn import unlearn_model
    from hookunlearn.selection import corpus_stats
    from hookunlearn.tokens import tokenize_texts
    from hookunlearn.train import TrainConfig

    spec = MODELS[name]
    cuda = spec["device"] == "cuda"
    after_imports = _rss_mb()
    model = build_model(name)
    layer = spec["layer"]
    forget_texts = load_texts("world:forget_corpus")
    retain_texts = load_texts("world:retain_corpus")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_mb()
    base_cuda = torch.cuda.memory_allocated() / 2**20 if cuda else 0.0

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    out: dict = {
        "model": name,
        "phase": phase,
        "layer": layer,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if phase == "select":
        sae = random_sae(model, layer)
        texts, count = [], 0
        pool = forget_texts + retain_texts
        while count < args.select_tokens:
            for text in pool:
                texts.append(text)
                count += len(model.tokenizer(text, add_special_tokens=False)["input_ids"])
                if count >= args.select_tokens:
                    break
        sync()
        start = time.perf_counter()
        stats = corpus_stats(model, {layer: sae}, texts, batch_size=16, max_tokens=128)
        sync()
        seconds = time.perf_counter() - start
        tokens = stats[layer].n
        out.update(seconds=seconds, tokens=tokens, tokens_per_s=tokens / seconds, d_sae=sae.cfg.d_sae)
    elif phase in ("ours", "reference"):
        total = args.warmup + args.steps
        if phase == "ours":
            stamps: list[float] = []
            losses: list[float] = []

            def progress(record: dict) -> None:
                sync()
                stamps.append(time.perf_counter())
                losses.append(float(record["loss"]))

            start = time.perf_counter()
            unlearn_model(
                model,
                "rmu",
                layer=layer,
                forget=forget_texts,
                retain=retain_texts,
                options=RMU_OPTIONS,
                train=TrainConfig(steps=total, batch_size=BATCH, lr=5e-5, grad_clip=None, seed=SEED),
                progress=progress,
            )
            times = [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]
        else:
            forget = tokenize_texts(model, forget_texts)
            retain = tokenize_texts(model, retain_texts)
            times, losses = manual_steps(model, "reference", layer, forget, retain, BATCH, total)
        sync()
        forget = tokenize_texts(model, forget_texts)
        retain = tokenize_texts(model, retain_texts)
        per_step = BATCH * (forget.tokens.shape[1] + retain.tokens.shape[1])  # padded tokens of both sides
        timed = times[args.warmup :]
        median = statistics.median(timed)
        out.update(
            step_s=median,
            step_times_s=times,
            tokens_per_s=per_step / median,
            loss_step0=losses[0],
            loss_last=losses[-1],
        )
    else:
        records = load_records("world:mc_hazard")[: args.eval_items]
        questions = parse_questions(records, "world:mc_hazard")
        evaluate_mc(model, questions[:2], batch_size=16)  # warm-up
        sync()
        start = time.perf_counter()
        result = evaluate_mc(model, questions, batch_size=16)
        sync()
        seconds = time.perf_counter() - start
        tokens = sum(
            len(model.tokenizer(f"{q.question}\nAnswer: {c}")["input_ids"])
            for q in questions
            for c in q.choices
        )
        out.update(
            seconds=seconds,
            items=len(questions),
            items_per_s=len(questions) / seconds,
            tokens_per_s=tokens / seconds,
            accuracy=result.accuracy,
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(
        peak_rss_mb=peak_rss,
        after_imports_mb=after_imports,
        above_imports_mb=peak_rss - after_imports,
        base_rss_mb=base_rss,
    )
    if cuda:
        out.update(
            peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20,
            base_cuda_mb=base_cuda,
        )
    return out


# --- parent -----------------------------------------------------------------------------------


def run_child(name: str, phase: str, args: argparse.Namespace) -> dict:
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}
    argv = [
        sys.executable,
        __file__,
        "--child",
        name,
        phase,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    argv += [
        "--threads",
        threads,
        "--select-tokens",
        str(args.select_tokens),
        "--eval-items",
        str(args.eval_items),
    ]
    from unlearn_step import run_json_child

    return run_json_child(argv, env, f"{name}/{phase}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default=None, help="comma list (default: the CPU models, or the GPU ones with --gpu)"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="the CUDA bf16 models (gemma-2-2b, llama-3-8b shapes)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed unlearning steps (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per phase (default 2)")
    parser.add_argument("--select-tokens", type=int, default=1024)
    parser.add_argument("--eval-items", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/scale[_gpu].json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return
    names = args.models.split(",") if args.models else list(GPU_MODELS if args.gpu else CPU_MODELS)
    for name in names:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if any(MODELS[name]["device"] == "cuda" for name in names):
        import torch

        if not torch.cuda.is_available():
            parser.exit(
                2, f"error: {', '.join(names)} need CUDA and none is available; run the CPU models.\n"
            )
    out_path = args.out or Path(__file__).parent / "results" / (
        "scale_gpu.json" if args.gpu else "scale.json"
    )
    wall = time.perf_counter()
    rows: dict[str, dict[str, dict]] = {}
    summary: dict[str, dict] = {}
    for name in names:
        rows[name] = {}
        for phase in PHASES:
            print(f"running {name} / {phase} ...", file=sys.stderr, flush=True)
            rows[name][phase] = run_child(name, phase, args)
        ours, ref = rows[name]["ours"], rows[name]["reference"]
        key = "peak_cuda_mb" if "peak_cuda_mb" in ours else "peak_rss_mb"
        spread = abs(ours["loss_step0"] - ref["loss_step0"]) / max(1.0, abs(ref["loss_step0"]))
        summary[name] = {
            "parameters": ours["parameters"],
            "step0_loss_relative_difference": spread,
            "step_reference_over_ours": ref["step_s"] / ours["step_s"],
            "peak_ours_over_reference": ours[key] / ref[key],
            "peak_measure": key,
            "above_imports_ours_over_reference": ours["above_imports_mb"] / ref["above_imports_mb"],
        }
        if spread > LOSS_TOL:
            print(f"warning: {name}: step-0 losses differ by {spread:.2e} (relative)", file=sys.stderr)

    print()
    header = (
        f"{'model':11} {'params':>7} {'phase':10} {'s/step or s':>11} {'tokens/s':>9} {'peak MB':>9} "
        f"{'above imports MB':>17}"
    )
    print(header)
    print("-" * len(header))
    for name, phases in rows.items():
        for phase, row in phases.items():
            seconds = row.get("step_s", row.get("seconds"))
            peak = row.get("peak_cuda_mb", row["peak_rss_mb"])
            print(
                f"{name:11} {row['parameters'] / 1e6:6.0f}M {phase:10} {seconds:11.3f} {row['tokens_per_s']:9.0f} "
                f"{peak:9.0f} {row['above_imports_mb']:17.0f}"
            )
    print()
    for name, s in summary.items():
        print(
            f"{name}: reference/ours step time {s['step_reference_over_ours']:.2f}x; ours/reference peak "
            f"({s['peak_measure']}) {s['peak_ours_over_reference']:.2f}x (above imports "
            f"{s['above_imports_ours_over_reference']:.2f}x); step-0 losses differ by {s['step0_loss_relative_difference']:.1e}"
        )
    goal = None
    judged = "deep24" if "deep24" in summary else next((n for n in GPU_MODELS if n in summary), None)
    if judged is not None:
        goal = {
            "model": judged,
            "target": "ours' peak memory <= 0.6x the reference's",
            "ratio": summary[judged]["peak_ours_over_reference"],
            "met": summary[judged]["peak_ours_over_reference"] <= 0.6,
        }
        print(
            f"goal ({judged}): peak <= 0.6x reference: {'met' if goal['met'] else 'NOT met'} ({goal['ratio']:.2f}x)"
        )
    import torch

    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "scale",
        "batch_size": BATCH,
        "steps": args.steps,
        "warmup": args.warmup,
        "torch_threads": args.threads,
        "select_tokens": args.select_tokens,
        "eval_items": args.eval_items,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "cuda_device": torch.cuda.get_device_name() if args.gpu and torch.cuda.is_available() else None,
        "total_wall_s": time.perf_counter() - wall,
        "summary": summary,
        "goal": goal,
        "rows": rows,
    }
    out_path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
