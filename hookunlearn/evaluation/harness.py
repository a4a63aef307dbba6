"""lm-evaluation-harness inside ``hookunlearn eval``: the suite ``lm_eval:tasks=A|B``.

The harness runs in-process on the evaluated model (and, as for every suite, on the base model
and the oracle when the report has them), through `hookunlearn.evaluation.harness_lm`: the
HookedTransformer with whatever hooks are on it (``--intervention``), scored by the harness's
own task code. Its metrics are folded into the report as ``TASK.METRIC`` (``world_mc.acc``), so
they get the base / unlearned / oracle columns like ours. Tasks are the harness's registered
tasks or local YAMLs (``include_path=DIR``); `write_mc_task` writes one from a multiple-choice
data file in hookunlearn's protocols, character for character, so the harness can score our
data and be compared with the ``mc`` suite item by item.

Needs the optional extra: ``pip install 'hookunlearn[lm-eval]'`` (lm-eval 0.4.x).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hookunlearn.backends.types import LanguageModel
from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.suites import EvalContext, Suite, register

__all__ = ["HarnessConfig", "HarnessSuite", "write_mc_task"]

INSTALL_HINT = "install it with pip install 'hookunlearn[lm-eval]'"


@dataclass(frozen=True)
class HarnessConfig:
    tasks: tuple[str, ...] = ()
    """Harness task (or group) names, ``|``-separated on the command line."""
    include_path: str | None = None
    """A directory of local task YAMLs (the harness's ``--include_path``)."""
    limit: int | None = None
    """At most N documents per task (the harness's ``--limit``)."""
    num_fewshot: int | None = None
    seed: int | None = None
    """The harness's random, numpy, torch and few-shot seeds (default: the harness's own)."""
    batch_size: int = 16
    name: str | None = None
    """This instance's name in the report (default ``lm_eval``)."""


@contextlib.contextmanager
def _quiet_harness() -> Iterator[None]:
    """The library does not print: the harness's logging below ERROR, its progress bars and those
    of ``datasets`` are held back while it runs (errors still raise)."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level = logger.level
    bars = datasets.utils.logging.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


_TASK_MANAGERS: dict[str | None, Any] = {}


def _task_manager(include_path: str | None) -> Any:
    """The harness's `TaskManager` for ``include_path``, built once per process (indexing the
    harness's task YAMLs takes seconds)."""
    if include_path not in _TASK_MANAGERS:
        try:
            from lm_eval.tasks import TaskManager
        except ImportError:
            raise HookunlearnError(f"suite lm_eval needs lm-evaluation-harness; {INSTALL_HINT}.") from None
        with _quiet_harness():
            _TASK_MANAGERS[include_path] = TaskManager(include_path=include_path)
    return _TASK_MANAGERS[include_path]


def _metric_name(task: str, key: str) -> str:
    metric, _, filter_name = key.partition(",")
    return f"{task}.{metric}" if filter_name in ("", "none") else f"{task}.{metric}:{filter_name}"


def _fold(results: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
    metrics: dict[str, float] = {}
    n: dict[str, int] = {}
    for task, block in (results.get("results") or {}).items():
        for key, value in block.items():
            if key == "alias" or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and math.isnan(value):
                continue
            metrics[_metric_name(task, key)] = float(value)
            samples = (results.get("n-samples") or {}).get(task) or {}
            count = samples.get("effective")
            if isinstance(count, int):
                n[_metric_name(task, key)] = count
    details = {
        "harness_version": (results.get("versions") or {}),
        "higher_is_better": results.get("higher_is_better") or {},
        "n_samples": results.get("n-samples") or {},
    }
    return metrics, n, details


@register
class HarnessSuite(Suite):
    """lm-evaluation-harness tasks run in-process on the model, folded into the report."""

    name = "lm_eval"
    version = 1
    Config = HarnessConfig
    summary = "lm-evaluation-harness tasks (tasks=A|B, include_path=DIR) scored on the model by the harness"
    reusable_from_report = False
    """Its numbers depend on the harness's version and the task YAMLs' content, not only the config."""

    def instance_name(self) -> str:
        return self.config.name or self.name

    def check(self) -> None:
        """Errors a user can fix, raised before any model is loaded (`Suite.check`): no tasks, no
        include directory, the harness not installed, a task it does not know."""
        if not self.config.tasks:
            raise HookunlearnError(
                "suite lm_eval: name the tasks, e.g. --suite 'lm_eval:tasks=wmdp_bio|mmlu'."
            )
        if self.config.include_path is not None and not Path(self.config.include_path).is_dir():
            raise HookunlearnError(
                f"suite lm_eval: include_path={self.config.include_path!r} is not a directory of task YAMLs."
            )
        manager = _task_manager(self.config.include_path)
        unknown = [task for task in self.config.tasks if task not in manager.all_tasks]
        if unknown:
            raise HookunlearnError(
                f"suite lm_eval: unknown task(s) {', '.join(unknown)}"
                + (
                    f" (none in include_path={self.config.include_path!r})"
                    if self.config.include_path
                    else ""
                )
                + "; list them with `lm_eval --tasks list`, or pass include_path=DIR of task YAMLs."
            )

    def compute(
        self, model: LanguageModel, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
        self.check()
        import lm_eval

        from hookunlearn.evaluation.harness_lm import harness_model

        config = self.config
        seeds = {} if config.seed is None else {
            "random_seed": config.seed, "numpy_random_seed": config.seed,
            "torch_random_seed": config.seed, "fewshot_random_seed": config.seed,
        }  # fmt: skip
        context.say(f"lm_eval: {', '.join(config.tasks)}")
        with _quiet_harness(), harness_model(model, batch_size=config.batch_size) as lm:
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(config.tasks),
                task_manager=_task_manager(config.include_path),
                limit=config.limit,
                num_fewshot=config.num_fewshot,
                bootstrap_iters=0,
                log_samples=True,
                **seeds,
            )
        if results is None:  # only on non-zero ranks of a distributed harness run
            raise HookunlearnError("suite lm_eval: the harness returned no results.")
        metrics, n, details = _fold(results)
        if context.samples is not None:  # eval --log-samples: the harness's own samples, per item
            for task, rows in (results.get("samples") or {}).items():
                for row in rows:
                    context.samples.write(_sample(task, row))
        return metrics, n, details


def _sample(task: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """One harness sample in our samples' fields (docs/evaluation.md), JSON-ready: the task, ids,
    prompt, per-request scores (log-likelihood, is-greedy) or generations, target and metrics."""
    arguments = row.get("arguments") or []
    prompt = arguments[0][0] if arguments and isinstance(arguments[0], (list, tuple)) else None
    metric_names = row.get("metrics") or []
    record = {
        "task": task,
        "doc_id": row.get("doc_id"),
        "item_id": row.get("doc_id"),
        "prompt": prompt,
        "prompt_hash": row.get("prompt_hash"),
        "choices": [a[1] for a in arguments if isinstance(a, (list, tuple)) and len(a) > 1],
        "scores": row.get("filtered_resps"),
        "target": row.get("target"),
        "metrics": {name: row[name] for name in metric_names if name in row},
    }
    if "acc" in record["metrics"]:
        record["correct"] = bool(record["metrics"]["acc"])
    return json.loads(json.dumps(record, default=str))


# ---------------------------------------------------------------------------------------------
# Local task YAMLs from our MC data
# ---------------------------------------------------------------------------------------------


def write_mc_task(
    directory: str | Path,
    name: str,
    records: Sequence[Mapping[str, Any]],
    *,
    protocol: Literal["letter", "continuation"] = "continuation",
    description: str = "",
) -> Path:
    """Write task ``name`` (``NAME.yaml`` + ``NAME.jsonl``) into ``directory``: the harness's
    ``multiple_choice`` task scoring ``records`` (``question``, ``choices``, ``answer``) exactly as
    hookunlearn's ``mc`` suite does with ``protocol`` (`hookunlearn.evaluation.mc`): the prompt is
    rendered by our own functions into each document, so the two cannot drift. Returns the YAML."""
    from hookunlearn.evaluation.mc import LETTERS, mc_request, parse_questions

    questions = parse_questions(list(records), f"task {name}")
    rows = []
    for index, question in enumerate(questions):
        # the mc suite's own request: the description line only in the letter protocol
        prompt, _ = mc_request(question, protocol, description)
        choices = list(LETTERS[: len(question.choices)]) if protocol == "letter" else list(question.choices)
        rows.append({"id": index, "prompt": prompt, "choices": choices, "answer": question.answer})
    return _write_task(
        directory,
        name,
        rows,
        f"write_mc_task ({protocol} protocol)",
        [
            "output_type: multiple_choice",
            'doc_to_text: "{{prompt}}"',
            'doc_to_choice: "{{choices}}"',
            "doc_to_target: answer",
        ],
        ["acc", "acc_norm"],
    )


def write_generation_task(
    directory: str | Path,
    name: str,
    prompts: Sequence[str],
    *,
    until: Sequence[str] = ("Question:", "</s>", "<|im_end|>"),
    max_gen_toks: int = 256,
) -> Path:
    """Write task ``name`` (``NAME.yaml`` + ``NAME.jsonl``) into ``directory``: the harness's
    ``generate_until`` task generating greedily after each of ``prompts`` (rendered as given),
    stopping at ``until`` (GSM8K's zero-shot stop strings by default) or after ``max_gen_toks``
    tokens. The metric is an exact match against an empty target; what matters is the per-item
    generation in the logged samples. Returns the YAML."""
    rows = [{"id": index, "prompt": prompt, "target": ""} for index, prompt in enumerate(prompts)]
    return _write_task(
        directory,
        name,
        rows,
        "write_generation_task",
        [
            "output_type: generate_until",
            'doc_to_text: "{{prompt}}"',
            'doc_to_target: "{{target}}"',
            "generation_kwargs:",
            f"  until: {json.dumps(list(until))}",
            "  do_sample: false",
            f"  max_gen_toks: {int(max_gen_toks)}",
        ],
        ["exact_match"],
    )


def _write_task(
    directory: str | Path,
    name: str,
    rows: Sequence[Mapping[str, Any]],
    writer: str,
    body: Sequence[str],
    metrics: Sequence[str],
) -> Path:
    """``NAME.jsonl`` (``rows``) and ``NAME.yaml`` (a local json dataset, ``body``, ``metrics``
    averaged, higher better) in ``directory``; returns the YAML."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    lines = [
        f"# Written by hookunlearn.evaluation.harness.{writer}.",
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data.resolve()))}",
        "test_split: test",
        *body,
        "metric_list:",
    ]
    for metric in metrics:
        lines += [f"  - metric: {metric}", "    aggregation: mean", "    higher_is_better: true"]
    yaml = directory / f"{name}.yaml"
    yaml.write_text("\n".join([*lines, "metadata:", "  version: 1", ""]), encoding="utf-8")
    return yaml
