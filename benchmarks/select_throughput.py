"""`select` throughput at real widths against its floor (the forward pass to the hooked layer plus
the SAE encode), side by side in one run.

Cases (random init, the world tokenizer's ids, ``--tokens`` real tokens per pass, batches of 16
documents cut at 128 tokens, the model's own device and float32):

- ``gpt2-small``: d_model 768, 12 heads, d_mlp 3072, vocab 50257, hooked layer 6; a random
  standard SAE of width 24576;
- ``d2304``: gemma-2-2b's block shape (d_model 2304, 8 heads of 256 with 4 key/value heads, gated
  d_mlp 9216, RMS norms, rotary; vocabulary 50257: no pass reads the embedding rows beyond the
  tokens'), hooked layer 2; a random JumpReLU SAE of width 16384.

Only the blocks up to the hooked layer exist beyond one more (``stop_at_layer`` never runs the
rest, so a full-depth model would only cost memory). Modes, each a full pass over the same batches:

- ``floor``: tokenise, ``run_with_cache`` to the hooked layer, ``sae.encode`` of the real tokens;
- ``stats``: `hookunlearn.selection.corpus_stats` with ``second_moments=False`` (what every score needs);
- ``stats+moments``: the same with the residual second moment (``select``'s default; only
  ``build``'s energy-share diagnostics read it);
- ``select``: stats + moments + the top-activating contexts (``top_contexts=8``: what
  ``hookunlearn select`` runs by default);
- ``legacy``: stats + moments with the accumulation before this change (every batch's codes and
  residuals copied to CPU float64, one float64 outer product).

After one untimed floor pass, the modes run in a rotated order in each of ``--repeats`` rounds and
the median pass time is reported, with tokens/s and
each mode's ratio to the floor (goal: ``select`` within 1.5x). The statistics of ``stats+moments``
and ``legacy`` are compared (max relative difference), so the speed-up changes no result. One
torch thread by default (``--threads``). Prints a table and writes JSON (default:
benchmarks/results/select_throughput.json).

    python benchmarks/select_throughput.py [--cases gpt2-small,d2304] [--tokens 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

CASES = {
    "gpt2-small": {
        "layer": 6,
        "d_sae": 24576,
        "sae": "standard",
        "cfg": {
            "d_model": 768,
            "n_heads": 12,
            "d_head": 64,
            "d_mlp": 3072,
            "d_vocab": 50257,
            "act_fn": "gelu_new",
            "normalization_type": "LN",
            "positional_embedding_type": "standard",
        },
    },
    "d2304": {
        "layer": 2,
        "d_sae": 16384,
        "sae": "jumprelu",
        "cfg": {
            "d_model": 2304,
            "n_heads": 8,
            "d_head": 256,
            "n_key_value_heads": 4,
            "d_mlp": 9216,
            "gated_mlp": True,
            "d_vocab": 50257,  # gemma's 256000 only adds embedding rows no pass reads
            "act_fn": "gelu_pytorch_tanh",
            "normalization_type": "RMS",
            "positional_embedding_type": "rotary",
            "rotary_dim": 256,
        },
    },
}
MODES = ("floor", "stats", "stats+moments", "select", "legacy")
SEED = 0


def build_case(name: str, device: str):  # noqa: ANN201
    """(model, {layer: sae}) for a case, random init."""
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from hookunlearn.models import load_model

    case = CASES[name]
    layer = case["layer"]
    tokenizer = load_model("world", device="cpu").tokenizer
    torch.manual_seed(SEED)
    cfg = HookedTransformerConfig(n_layers=layer + 2, n_ctx=128, device=device, seed=SEED, **case["cfg"])
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.eval()
    hook = f"blocks.{layer}.hook_resid_post"
    meta = SAEMetadata(hook_name=hook)
    d_model, d_sae = cfg.d_model, case["d_sae"]
    if case["sae"] == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_model, d_sae=d_sae, metadata=meta, device=device))
    else:
        sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=d_sae, metadata=meta, device=device))
    with torch.no_grad():
        for param in sae.parameters():
            param.normal_(0, 1 / d_model**0.5)
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(0.5)  # about a third of the latents fire on unit-scale inputs
        sae.b_enc.zero_()
    return model, {layer: sae}


def texts_for(tokens: int, model) -> list[str]:  # noqa: ANN001
    """World corpus documents, repeated until they hold about ``tokens`` real tokens (128 max each)."""
    from hookunlearn.data import load_texts

    pool = load_texts("world:forget_corpus") + load_texts("world:retain_corpus")
    out, count = [], 0
    while count < tokens:
        for text in pool:
            out.append(text)
            count += min(127, len(model.tokenizer(text, add_special_tokens=False)["input_ids"]))
            if count >= tokens:
                break
    return out


def legacy_add(self, acts, codes, **_: object) -> None:  # noqa: ANN001
    """`RoleStats.add` before this change: CPU float64 copies and a float64 outer product."""
    import torch

    x = acts.detach().to("cpu", torch.float64)
    c = codes.detach().to("cpu", torch.float64)
    self.n += x.shape[0]
    self.code_sum += c.sum(dim=0)
    self.fire_count += (c > 0).sum(dim=0).to(torch.float64)
    self.resid_sum += x.sum(dim=0)
    if self.resid_outer is not None:
        self.resid_outer += x.T @ x


def run_mode(mode: str, model, saes, texts: list[str]):  # noqa: ANN001, ANN201
    """One pass; returns (seconds, real tokens, statistics or None)."""
    import torch

    from hookunlearn.activations import cache_hooks, tokenize_batch
    from hookunlearn.interpret import TopContexts
    from hookunlearn.selection import RoleStats, corpus_stats

    def sync() -> None:
        if str(model.cfg.device).startswith("cuda"):
            torch.cuda.synchronize()

    sync()
    start = time.perf_counter()
    stats = None
    n = 0
    if mode == "floor":
        ((layer, sae),) = saes.items()
        hook = sae.cfg.metadata.hook_name
        with torch.no_grad():
            for i in range(0, len(texts), 16):
                tokens, mask = tokenize_batch(model, texts[i : i + 16], max_tokens=128)
                acts = cache_hooks(model, tokens, [hook])[hook][mask.to(model.cfg.device)]
                sae.encode(acts.to(sae.dtype))
                n += int(mask.sum())
    else:
        contexts = None
        if mode == "select":
            contexts = {lay: TopContexts.empty(sae.cfg.d_sae, 8, 12, 4) for lay, sae in saes.items()}
        original = RoleStats.add
        if mode == "legacy":
            RoleStats.add = legacy_add
        try:
            stats = corpus_stats(
                model,
                saes,
                texts,
                batch_size=16,
                max_tokens=128,
                second_moments=mode != "stats",
                contexts=contexts,
            )
        finally:
            RoleStats.add = original
        n = next(iter(stats.values())).n
    sync()
    return time.perf_counter() - start, n, stats


def max_relative_difference(a, b) -> float:  # noqa: ANN001
    worst = 0.0
    for name in ("code_sum", "fire_count", "resid_sum", "resid_outer"):
        x, y = getattr(a, name), getattr(b, name)
        scale = float(y.abs().max()) or 1.0
        worst = max(worst, float((x - y).abs().max()) / scale)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of: " + ", ".join(CASES))
    parser.add_argument("--tokens", type=int, default=1024, help="real tokens per pass (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all modes (default 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "select_throughput.json"
    )
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, dict] = {}
    wall = time.perf_counter()
    for name in args.cases.split(","):
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")
        print(f"building {name} ...", file=sys.stderr, flush=True)
        model, saes = build_case(name, args.device)
        texts = texts_for(args.tokens, model)
        run_mode("floor", model, saes, texts)  # warm-up, untimed (allocator, kernels, page faults)
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        tokens: dict[str, int] = {}
        kept: dict[str, object] = {}
        for repeat in range(args.repeats):
            for mode in MODES[repeat % len(MODES) :] + MODES[: repeat % len(MODES)]:  # rotated each round
                print(f"  {name} round {repeat + 1}: {mode}", file=sys.stderr, flush=True)
                seconds, n, stats = run_mode(mode, model, saes, texts)
                times[mode].append(seconds)
                tokens[mode] = n
                if stats is not None:
                    kept[mode] = next(iter(stats.values()))
        floor = statistics.median(times["floor"])
        rows = {}
        for mode in MODES:
            median = statistics.median(times[mode])
            rows[mode] = {
                "median_s": median,
                "times_s": times[mode],
                "tokens": tokens[mode],
                "tokens_per_s": tokens[mode] / median,
                "x_floor": median / floor,
                "s_per_4k_tokens_above_floor": (median - floor) / tokens[mode] * 4096,
            }
        results[name] = {
            "layer": CASES[name]["layer"],
            "d_model": model.cfg.d_model,
            "d_sae": CASES[name]["d_sae"],
            "sae": CASES[name]["sae"],
            "modes": rows,
            "legacy_vs_new_max_relative_difference": max_relative_difference(
                kept["stats+moments"], kept["legacy"]
            ),
            "goal_select_within_1_5x_floor": rows["select"]["x_floor"] <= 1.5,
            "goal_stats_moments_within_1_5x_floor": rows["stats+moments"]["x_floor"] <= 1.5,
        }
        del model, saes

    print()
    header = (
        f"{'case':11} {'mode':14} {'median s':>9} {'tokens/s':>9} {'x floor':>8} {'s/4k tok over floor':>20}"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        for mode, row in result["modes"].items():
            print(
                f"{name:11} {mode:14} {row['median_s']:9.3f} {row['tokens_per_s']:9.0f} {row['x_floor']:8.2f} "
                f"{row['s_per_4k_tokens_above_floor']:20.3f}"
            )
        print(
            f"{name}: select {result['modes']['select']['x_floor']:.2f}x floor "
            f"(goal <= 1.5x: {'met' if result['goal_select_within_1_5x_floor'] else 'NOT met'}); "
            f"legacy accumulation {result['modes']['legacy']['x_floor']:.2f}x; "
            f"new vs legacy statistics differ by {result['legacy_vs_new_max_relative_difference']:.1e} (relative)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "select_throughput",
        "device": args.device,
        "torch_threads": args.threads,
        "tokens_per_pass": args.tokens,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "total_wall_s": time.perf_counter() - wall,
        "cases": results,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
