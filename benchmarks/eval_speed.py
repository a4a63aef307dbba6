"""One exported checkpoint scored by hookunlearn and by lm-evaluation-harness, side by side.

For each MC data file (the world's hazard and benign questions by default) and each protocol
(``continuation`` and ``letter``), in one run on the same exported checkpoint:

- ``hookunlearn``: `hookunlearn.evaluation.mc.evaluate_mc` on the checkpoint loaded with
  `hookunlearn.models.load_model` (what ``hookunlearn eval --mc`` runs);
- ``lm-eval``: lm-evaluation-harness's own ``hf`` model on the checkpoint **with its defaults**
  (``pretrained=DIR``: the tokenizer as exported, the harness's batching), on a local task that
  `hookunlearn.evaluation.harness.write_mc_task` writes from the same data in the same protocol.

It reports each side's accuracy, how many items get the same prediction, the largest per-choice
log-likelihood difference, and each side's wall time (the median of ``--repeats`` alternating
runs) and items/s (model load excluded; the harness's time includes building its requests, as a
user of it pays) with the ratio. The export
must be one `hookunlearn export` wrote (its tokenizer prepends BOS when the model expects it);
the default is a fresh export of the shipped world model. Prints a table, writes JSON (default
benchmarks/results/eval_speed.json).

    python benchmarks/eval_speed.py [--export DIR] [--batch-size 32] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _lm_eval(lm, manager, name: str) -> tuple[dict, float]:
    """One task through the harness on an already-built ``hf`` model (model load excluded)."""
    import lm_eval

    start = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm, tasks=[name], task_manager=manager, bootstrap_iters=0, log_samples=True
    )
    return results, time.perf_counter() - start


def _generation_case(
    model, export: Path, scratch: Path, n: int, batch_size: int, max_new_tokens: int, repeats: int
) -> dict:
    """GSM8K-style zero-shot greedy generation on ``n`` world questions: our gsm8k suite's
    generator vs the harness's hf model (HF ``generate``), at the same batch size; each side
    ``repeats`` times, alternating, median time."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from hookunlearn.evaluation.gsm8k import STOP_SEQUENCES, fit_prompt, generate_greedy, render_prompt
    from hookunlearn.evaluation.harness import write_generation_task
    from hookunlearn.evaluation.scoring import bos_prefix, encode_batch
    from hookunlearn.world.assets import world_dir

    rows = [json.loads(line) for line in (world_dir() / "data" / "entity_qa.jsonl").read_text().splitlines()][
        :n
    ]
    texts = [render_prompt(row["prompt"].removeprefix("Q: ").split("\n")[0], []) for row in rows]
    tasks = scratch / "gen_tasks"
    write_generation_task(tasks, "world_gen", texts, until=STOP_SEQUENCES, max_gen_toks=max_new_tokens)
    prefix = bos_prefix(model, None)
    budget = model.cfg.n_ctx - max_new_tokens
    manager = TaskManager(include_path=str(tasks))
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=str(export), device="cpu", batch_size=batch_size)  # loaded once: load excluded
    ours_times, theirs_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = encode_batch(model, texts)
        prompts = [fit_prompt(ids, prefix, budget) for ids in encoded]
        ours = generate_greedy(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        results = lm_eval.simple_evaluate(
            model=hf, tasks=["world_gen"], task_manager=manager, bootstrap_iters=0, log_samples=True
        )
        theirs_times.append(time.perf_counter() - start)
    ours_s, theirs_s = statistics.median(ours_times), statistics.median(theirs_times)
    samples = sorted(results["samples"]["world_gen"], key=lambda row: row["doc_id"])
    theirs = [row["resps"][0][0] for row in samples]
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    return {
        "n": n,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "same_generation": same,
        "first_difference": next(([a, b] for a, b in zip(ours, theirs, strict=True) if a != b), None),
        "hookunlearn_s": ours_s,
        "lm_eval_s": theirs_s,
        "hookunlearn_runs_s": ours_times,
        "lm_eval_runs_s": theirs_times,
        "speedup": theirs_s / ours_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--export", help="an exported checkpoint (default: a fresh export of the world model)"
    )
    parser.add_argument("--data", nargs="*", default=["mc_hazard", "mc_benign"], help="world MC files")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--generation", type=int, default=96, help="GSM8K-style generations (0: skip)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--generation-batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side and case (median)")
    parser.add_argument("--out", default="benchmarks/results/eval_speed.json")
    args = parser.parse_args()

    import torch

    from hookunlearn.evaluation.harness import write_mc_task
    from hookunlearn.evaluation.mc import evaluate_mc, parse_questions
    from hookunlearn.export import export_model
    from hookunlearn.models import load_model
    from hookunlearn.world.assets import world_dir

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    scratch = Path(tempfile.mkdtemp(prefix="eval-speed-"))
    export = Path(args.export) if args.export else scratch / "export"
    if not args.export:
        export_model(load_model("world", device="cpu"), export)
    model = load_model(str(export), device="cpu")
    rows, cases = [], []
    for data in args.data:
        records = [
            json.loads(line) for line in (world_dir() / "data" / f"{data}.jsonl").read_text().splitlines()
        ]
        questions = parse_questions(records, data)
        for protocol in ("continuation", "letter"):
            name = f"{data}_{protocol}"
            write_mc_task(scratch / "tasks", name, records, protocol=protocol)
            cases.append((name, data, protocol, questions))
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    hf = HFLM(pretrained=str(export), device="cpu", batch_size=args.batch_size)
    manager = TaskManager(include_path=str(scratch / "tasks"))
    harness_s = 0.0
    total_ours = 0.0
    for name, data, protocol, questions in cases:
        harness_times, ours_times = [], []
        for _ in range(args.repeats):  # alternating, median time of each side
            harness, seconds = _lm_eval(hf, manager, name)
            harness_times.append(seconds)
            start = time.perf_counter()
            ours = evaluate_mc(model, questions, protocol=protocol, batch_size=args.batch_size)
            ours_times.append(time.perf_counter() - start)
        case_harness_s, ours_s = statistics.median(harness_times), statistics.median(ours_times)
        harness_s += case_harness_s
        total_ours += ours_s
        samples = sorted(harness["samples"][name], key=lambda row: row["doc_id"])
        theirs = [[float(r[0][0]) for r in row["resps"]] for row in samples]
        predictions = [max(range(len(row)), key=row.__getitem__) for row in theirs]
        our_scores = ours.logliks  # the suite's own per-choice log-likelihoods
        worst = max(
            abs(a - b) for ra, rb in zip(our_scores, theirs, strict=True) for a, b in zip(ra, rb, strict=True)
        )
        same = sum(p == q for p, q in zip(predictions, ours.predictions, strict=True))
        rows.append(
            {
                "data": data,
                "protocol": protocol,
                "n": len(questions),
                "hookunlearn_accuracy": ours.accuracy,
                "lm_eval_accuracy": harness["results"][name]["acc,none"],
                "same_prediction": same,
                "max_abs_loglik_diff": worst,
                "hookunlearn_s": ours_s,
                "lm_eval_s": case_harness_s,
                "speedup": case_harness_s / ours_s,
            }
        )
    n_items = sum(row["n"] for row in rows)
    summary = {
        "export": str(export),
        "items": n_items,
        "hookunlearn_s": total_ours,
        "lm_eval_s": harness_s,
        "hookunlearn_items_per_s": n_items / total_ours,
        "lm_eval_items_per_s": n_items / harness_s,
        "speedup": harness_s / total_ours,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(
        f"{'data':<11} {'protocol':<13} {'n':>4} {'ours acc':>9} {'lm-eval acc':>12} {'same pred':>10} "
        f"{'max |dLL|':>10} {'ours s':>7} {'lm-eval s':>9} {'ratio':>6}"
    )
    for row in rows:
        print(
            f"{row['data']:<11} {row['protocol']:<13} {row['n']:>4} {row['hookunlearn_accuracy']:>9.3f} "
            f"{row['lm_eval_accuracy']:>12.3f} {row['same_prediction']:>6}/{row['n']:<3} {row['max_abs_loglik_diff']:>10.2e} "
            f"{row['hookunlearn_s']:>7.2f} {row['lm_eval_s']:>9.2f} {row['speedup']:>5.2f}x"
        )
    print(
        f"time on {n_items} items: hookunlearn {total_ours:.2f} s ({summary['hookunlearn_items_per_s']:.0f}/s), "
        f"lm-eval {harness_s:.2f} s ({summary['lm_eval_items_per_s']:.0f}/s): {summary['speedup']:.2f}x"
    )
    generation = None
    if args.generation:
        generation = _generation_case(
            model,
            export,
            scratch,
            args.generation,
            args.generation_batch_size,
            args.max_new_tokens,
            args.repeats,
        )
        print(
            f"generation ({generation['n']} prompts, batch {generation['batch_size']}, "
            f"{generation['max_new_tokens']} new tokens): same text {generation['same_generation']}/"
            f"{generation['n']}; hookunlearn {generation['hookunlearn_s']:.2f} s, lm-eval hf "
            f"{generation['lm_eval_s']:.2f} s: {generation['speedup']:.2f}x"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"summary": summary, "rows": rows, "generation": generation}, indent=2) + "\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
