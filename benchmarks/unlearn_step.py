"""One RMU unlearning step: hookunlearn's trainer vs a WMDP-style reference loop vs the compute floor.

Three implementations of the same RMU step, side by side in one run, on two models:

- ``ours``: ``hookunlearn.pipeline.unlearn.unlearn_model(model, "rmu", ...)``, i.e. the shared `Trainer`: the
  prefix below the first trainable block runs once per batch without grad, the frozen reference
  comes from frozen copies of the trainable blocks only, and no block above the hooked layer runs.
- ``reference``: the loop as the WMDP repository's ``rmu/unlearn.py`` structures it, written here:
  an updated model plus a FULL frozen ``copy.deepcopy(model)``; every step runs the updated model's
  full forward (all layers, to the logits; the hooked layer's ``hook_resid_post`` captured by a
  hook, as ``forward_with_cache`` does) on the forget and on the retain batch with grad, and the
  frozen copy's full forward on the retain batch without grad; one backward; AdamW step. It is
  given one advantage over the original: parameters that are not trained have
  ``requires_grad=False`` (the WMDP script leaves them on, so autograd also computes their grads).
- ``floor``: what an ideal implementation must compute, timed directly with no trainer machinery:
  one no-grad prefix pass per batch (forget, retain), the frozen trainable-block copies on the
  retain prefix (no grad), forward + backward through the trainable blocks only, AdamW step.

All three use the same loss (``MSE(h_l(forget), u) + alpha * MSE(h_l(retain), h_l^frozen(retain))``
over real tokens, hookunlearn's ``masked_mse``), the same control vector (`RMU`'s, seed 0), the
same trainable parameters (``mlp.W_out`` of layers l-2..l), AdamW (lr 5e-5, no gradient clipping:
WMDP does not clip, so ours runs with ``grad_clip=None``), the same batch size and the same batches
(``hookunlearn.tokens.batch_indices``, seed 0). The step-0 loss of the three is checked to agree
within 1e-4 (and printed) so the comparison is of equal work.

Models: (1) the shipped world model (4 layers, d_model 128, hooked layer 2, trainable 0..2);
(2) a random-init deeper model (16 layers, d_model 256, d_mlp 1024, world tokenizer, n_ctx 64;
hooked layer 4, trainable 2..4). Both read the world's forget / retain corpora.

Method: each (model, implementation) case runs in its own subprocess, so peak RSS (ru_maxrss) is
per case; each subprocess uses ``torch.set_num_threads(1)`` (and OMP/MKL_NUM_THREADS=1) to keep
the load on shared machines modest and timings comparable. Step times are wall-clock per optimiser
step (batch selection, forwards, loss, backward, optimiser step); the first ``--warmup`` steps are
dropped and the median of the next ``--steps`` is reported. For ``ours`` a step is the time
between consecutive progress callbacks of the trainer, so its own per-step overhead (logging,
last-good-parameter copy, gradient norm) counts. "above base" is peak RSS minus the resident size
after imports, model load and corpus load (what the unlearning itself adds); "above imports" is
peak RSS minus the resident size right after the imports, before the model is built (the model,
the frozen reference, activations and optimiser state: what a larger model scales); for ``ours`` the
imports include ``hookunlearn.pipeline.unlearn``, which pulls in ``sae_lens`` at module level (its RSS is
recorded as ``extra_import_mb`` and is part of ours' peak, a real cost of the public API). Ratios:
reference/ours for time, ours/reference for memory, ours/floor for time. The issue's goal on the
deeper model is >= 3x faster and <= 0.6x peak memory; it is reported, never tuned for. Prints a
table and writes JSON (default: benchmarks/results/unlearn_step.json).

    python benchmarks/unlearn_step.py [--steps 30] [--warmup 3] [--batch-size 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    "world": {"layer": 2, "desc": "world model, 4 layers, d_model 128"},
    "deep16": {"layer": 4, "desc": "random init, 16 layers, d_model 256"},
}
MODES = ("ours", "reference", "floor")
RMU_OPTIONS = {"steering_coeff": 20.0, "alpha": 100.0}
LR = 5e-5
SEED = 0
LOSS_TOL = 1e-4


# --- child process: one (model, mode) case ----------------------------------------------------


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _build_model(name: str):  # noqa: ANN202
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from hookunlearn.kernels import fuse_kernels
    from hookunlearn.models import load_model

    world = load_model("world", device="cpu")
    if name == "world":
        return world
    cfg = HookedTransformerConfig(
        n_layers=16,
        d_model=256,
        n_heads=8,
        d_head=32,
        d_mlp=1024,
        d_vocab=len(world.tokenizer),
        n_ctx=64,
        act_fn="gelu",
        normalization_type="LN",
        device="cpu",
        seed=SEED,
    )
    torch.manual_seed(SEED)
    model = HookedTransformer(cfg, tokenizer=world.tokenizer)
    fuse_kernels(model)  # as load_model does for every checkpoint (every loop runs on this model)
    model.eval()
    del world
    return model


def manual_steps(model, mode: str, layer: int, forget, retain, batch_size: int, total_steps: int):  # noqa: ANN001, ANN201
    """The ``reference`` (WMDP-style) or ``floor`` RMU loop on ``model`` for ``total_steps`` steps:
    (seconds per step, loss per step). Also used by ``benchmarks/scale.py``."""
    import copy

    import torch

    from hookunlearn.objectives.base import ObjectiveContext, masked_mse
    from hookunlearn.objectives.rmu import RMU, RMUConfig
    from hookunlearn.tokens import batch_indices

    trainable_layers = list(range(max(0, layer - 2), layer + 1))
    first = trainable_layers[0]
    losses: list[float] = []
    control = RMU(
        RMUConfig(**RMU_OPTIONS),
        ObjectiveContext(d_model=model.cfg.d_model, layer=layer, seed=SEED),
    ).control.to(model.cfg.device)
    alpha = RMU_OPTIONS["alpha"]
    hook_name = f"blocks.{layer}.hook_resid_post"
    for param in model.parameters():
        param.requires_grad_(False)
    params = [model.blocks[i].mlp.W_out for i in trainable_layers]
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    if mode == "reference":
        frozen = copy.deepcopy(model).requires_grad_(False).eval()

        def resid(m, tokens):  # noqa: ANN001, ANN202
            captured = {}

            def keep(act, hook):  # noqa: ANN001, ANN202, ARG001
                captured["resid"] = act

            m.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook_name, keep)])
            return captured["resid"]

        def step_loss(fb, rb):  # noqa: ANN001, ANN202
            h_forget = resid(model, fb.tokens)
            h_retain = resid(model, rb.tokens)
            with torch.no_grad():
                h_frozen = resid(frozen, rb.tokens)
            target = control.expand_as(h_forget)
            return masked_mse(h_forget, target, fb.mask) + alpha * masked_mse(h_retain, h_frozen, rb.mask)

    else:  # floor
        frozen_blocks = [copy.deepcopy(model.blocks[i]).requires_grad_(False) for i in trainable_layers]

        def step_loss(fb, rb):  # noqa: ANN001, ANN202
            with torch.no_grad():
                pre_forget = model(fb.tokens, stop_at_layer=first)
                pre_retain = model(rb.tokens, stop_at_layer=first)
                h_frozen = pre_retain
                for block in frozen_blocks:
                    h_frozen = block(h_frozen)
            h_forget, h_retain = pre_forget, pre_retain
            for i in trainable_layers:
                h_forget = model.blocks[i](h_forget)
                h_retain = model.blocks[i](h_retain)
            target = control.expand_as(h_forget)
            return masked_mse(h_forget, target, fb.mask) + alpha * masked_mse(h_retain, h_frozen, rb.mask)

    times = []
    for step in range(total_steps):
        start = time.perf_counter()
        fb = forget.batch(batch_indices(len(forget), batch_size, step, SEED))
        rb = retain.batch(batch_indices(len(retain), batch_size, step, SEED + 1))
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(fb, rb)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        times.append(time.perf_counter() - start)

    return times, losses


def child(model_name: str, mode: str, warmup: int, steps: int, batch_size: int) -> dict:
    import gc
    import resource
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from hookunlearn.data import load_texts

    # imported before the after-imports RSS is taken (manual_steps uses them), as before the split
    from hookunlearn.objectives.base import ObjectiveContext, masked_mse  # noqa: F401
    from hookunlearn.objectives.rmu import RMU, RMUConfig  # noqa: F401
    from hookunlearn.tokens import batch_indices, tokenize_texts  # noqa: F401
    from hookunlearn.train import TrainConfig

    import_mb = 0.0
    if mode == "ours":  # hookunlearn.pipeline.unlearn imports sae_lens at module level: count it apart
        before = _current_rss_mb()
        from hookunlearn.pipeline.unlearn import unlearn_model

        import_mb = _current_rss_mb() - before
    after_imports_mb = _current_rss_mb()
    model = _build_model(model_name)
    forget_texts = load_texts("world:forget_corpus")
    retain_texts = load_texts("world:retain_corpus")
    gc.collect()
    layer = MODELS[model_name]["layer"]
    trainable_layers = list(range(max(0, layer - 2), layer + 1))
    total_steps = warmup + steps
    base_mb = _current_rss_mb()
    stamps: list[float] = []
    losses: list[float] = []

    if mode == "ours":

        def progress(record: dict) -> None:
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
            train=TrainConfig(steps=total_steps, batch_size=batch_size, lr=LR, grad_clip=None, seed=SEED),
            progress=progress,
        )
        times = [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]
    else:
        times, losses = manual_steps(
            model,
            mode,
            layer,
            tokenize_texts(model, forget_texts),
            tokenize_texts(model, retain_texts),
            batch_size,
            total_steps,
        )

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timed = times[warmup:]
    return {
        "model": model_name,
        "mode": mode,
        "layer": layer,
        "trainable_layers": trainable_layers,
        "loss_step0": losses[0],
        "loss_last": losses[-1],
        "median_step_s": statistics.median(timed),
        "min_step_s": min(timed),
        "max_step_s": max(timed),
        "step_times_s": times,
        "peak_rss_mb": peak_mb,
        "base_rss_mb": base_mb,
        "above_base_mb": peak_mb - base_mb,
        "after_imports_mb": after_imports_mb,
        "above_imports_mb": peak_mb - after_imports_mb,
        "extra_import_mb": import_mb,
    }


# --- parent: run every case, compare, report --------------------------------------------------


def run_case(model_name: str, mode: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = [
        sys.executable,
        __file__,
        "--child",
        model_name,
        mode,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
    ]
    return run_json_child(argv, env, f"case {model_name}/{mode}")


def run_json_child(argv: list[str], env: dict[str, str], label: str) -> dict:
    """Run one benchmark case in its own process; its last stdout line is its JSON result."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps per case (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per side per step (default 8)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unlearn_step.json")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of: " + ", ".join(MODELS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1, --warmup >= 0")
    if args.child:
        print(json.dumps(child(*args.child, args.warmup, args.steps, args.batch_size)))
        return

    import torch

    rows: list[dict] = []
    summary: dict[str, dict] = {}
    wall = time.perf_counter()
    for model_name in args.models.split(","):
        if model_name not in MODELS:
            parser.error(f"unknown model {model_name!r}; choose from {', '.join(MODELS)}")
        cases = {}
        for mode in MODES:
            print(f"running {model_name} / {mode} ...", file=sys.stderr, flush=True)
            cases[mode] = run_case(model_name, mode, args)
            rows.append(cases[mode])
        ours, ref, floor = cases["ours"], cases["reference"], cases["floor"]
        loss0 = {mode: case["loss_step0"] for mode, case in cases.items()}
        spread = max(loss0.values()) - min(loss0.values())
        print(
            f"{model_name}: step-0 loss ours {loss0['ours']:.6f}  reference {loss0['reference']:.6f}  "
            f"floor {loss0['floor']:.6f}  (max diff {spread:.2e})"
        )
        assert spread <= LOSS_TOL, f"{model_name}: step-0 losses differ by {spread:.3e} > {LOSS_TOL}"
        summary[model_name] = {
            "description": MODELS[model_name]["desc"],
            "step0_loss": loss0,
            "step0_loss_max_diff": spread,
            "time_reference_over_ours": ref["median_step_s"] / ours["median_step_s"],
            "time_ours_over_floor": ours["median_step_s"] / floor["median_step_s"],
            "time_reference_over_floor": ref["median_step_s"] / floor["median_step_s"],
            "peak_rss_ours_over_reference": ours["peak_rss_mb"] / ref["peak_rss_mb"],
            "above_base_ours_over_reference": ours["above_base_mb"] / ref["above_base_mb"],
            "above_imports_ours_over_reference": ours["above_imports_mb"] / ref["above_imports_mb"],
        }
        for row in cases.values():
            row["time_vs_ours"] = row["median_step_s"] / ours["median_step_s"]
            row["time_vs_floor"] = row["median_step_s"] / floor["median_step_s"]
            row["peak_rss_vs_reference"] = row["peak_rss_mb"] / ref["peak_rss_mb"]

    print()
    header = (
        f"{'model':8} {'impl':10} {'median s':>9} {'min s':>7} {'max s':>7} {'x ours':>7} {'x floor':>8} "
        f"{'peak MB':>8} {'above imports MB':>17} {'above base MB':>14} {'import MB':>10} {'mem x ref':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['model']:8} {row['mode']:10} {row['median_step_s']:9.4f} {row['min_step_s']:7.4f} "
            f"{row['max_step_s']:7.4f} {row['time_vs_ours']:7.2f} {row['time_vs_floor']:8.2f} "
            f"{row['peak_rss_mb']:8.0f} {row['above_imports_mb']:17.0f} {row['above_base_mb']:14.0f} "
            f"{row['extra_import_mb']:10.0f} "
            f"{row['peak_rss_vs_reference']:10.2f}"
        )
    print()
    for model_name, s in summary.items():
        print(
            f"{model_name}: reference/ours time {s['time_reference_over_ours']:.2f}x, "
            f"ours/floor time {s['time_ours_over_floor']:.2f}x, "
            f"ours/reference peak RSS {s['peak_rss_ours_over_reference']:.2f}x "
            f"(above imports {s['above_imports_ours_over_reference']:.2f}x, "
            f"above base {s['above_base_ours_over_reference']:.2f}x)"
        )
    goal = None
    if "deep16" in summary:
        s = summary["deep16"]
        goal = {
            "target": "deep16: reference/ours time >= 3.0 and ours/reference peak RSS <= 0.6",
            "time_met": s["time_reference_over_ours"] >= 3.0,
            "memory_met": s["peak_rss_ours_over_reference"] <= 0.6,
            "memory_above_base_met": s["above_base_ours_over_reference"] <= 0.6,
            "memory_above_imports_met": s["above_imports_ours_over_reference"] <= 0.6,
        }
        print(
            f"goal (deep16): >= 3x faster: {'met' if goal['time_met'] else 'NOT met'}; "
            f"<= 0.6x peak RSS: {'met' if goal['memory_met'] else 'NOT met'} "
            f"(above imports: {'met' if goal['memory_above_imports_met'] else 'NOT met'}; "
            f"above base: {'met' if goal['memory_above_base_met'] else 'NOT met'})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "unlearn_step",
        "method": "rmu",
        "rmu_options": RMU_OPTIONS,
        "lr": LR,
        "seed": SEED,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "torch_threads": 1,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "total_wall_s": time.perf_counter() - wall,
        "summary": summary,
        "goal": goal,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
