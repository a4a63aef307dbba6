"""Reports: run suites on a model (and its base), compare, and write what a person reads.

``report.json`` (``REPORT_VERSION``) holds, for the evaluated model and optionally its baseline
and its oracle (the model that never saw the forget set), each suite's `SuiteResult` (suite, name,
version, config, metrics, n, details, seconds). ``report.md`` is one table, metric by metric:
base, unlearned, delta, and with an oracle, oracle and the gap to it (unlearned - oracle), which is
the headline: exact unlearning has a gap of 0 everywhere. ``plots/`` holds one
before/after bar chart per suite and, when the model came out of ``hookunlearn unlearn``, the loss
curves of its ``train_log.jsonl``.

A baseline or an oracle given as a directory with a ``report.json`` (an earlier ``hookunlearn eval
--out`` of that model) is read, not recomputed: its suites are reused when their name, suite
version and config match.

With per-item samples (``eval --log-samples``: a `SampleLog` on the context), ``samples/<role>/
<suite>.jsonl`` holds one JSON record per item for each model role (``model``, ``baseline``,
``oracle``) and suite that logs items, and ``report.json``'s ``samples`` lists those files. A
reused result's samples are copied from the earlier report when it logged them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformer_lens import HookedTransformer

from hookunlearn.backends.types import LanguageModel
from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.suites import EvalContext, Suite, SuiteResult

REPORT_VERSION = 3
"""3 added ``oracle``; version 2 reports (no oracle) are still read."""
READABLE_VERSIONS = (2, 3)


@dataclass
class ModelResults:
    model: dict[str, Any]
    results: dict[str, SuiteResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "results": {k: v.to_dict() for k, v in self.results.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelResults:
        return cls(dict(data["model"]), {k: SuiteResult.from_dict(v) for k, v in data["results"].items()})


@dataclass
class EvalReport:
    evaluated: ModelResults
    baseline: ModelResults | None = None
    options: dict[str, Any] = field(default_factory=dict)
    train_log: list[dict[str, Any]] | None = None
    report_version: int = REPORT_VERSION
    oracle: ModelResults | None = None
    """The oracle's results: the model retrained without the forget set."""
    samples: dict[str, Any] | None = None
    """With ``--log-samples``: ``{"format": N, "files": {role: {suite: {"path", "n"}}}}``, paths
    relative to the report's directory (`SampleLog.summary`); None when no samples were logged."""
    source: Path | None = field(default=None, compare=False)
    """The directory an earlier report was read from (`read_report`); not stored."""

    def to_dict(self) -> dict[str, Any]:
        data = {
            "report_version": self.report_version,
            "options": self.options,
            "evaluated": self.evaluated.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
            "oracle": self.oracle.to_dict() if self.oracle is not None else None,
            "train_log": self.train_log,
        }
        if self.samples is not None:
            data["samples"] = self.samples
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalReport:
        validate_report(data)
        return cls(
            evaluated=ModelResults.from_dict(data["evaluated"]),
            baseline=ModelResults.from_dict(data["baseline"]) if data.get("baseline") else None,
            options=dict(data.get("options") or {}),
            train_log=data.get("train_log"),
            oracle=ModelResults.from_dict(data["oracle"]) if data.get("oracle") else None,
            samples=data.get("samples") if isinstance(data.get("samples"), Mapping) else None,
        )

    def rows(self) -> list[tuple[str, str, float | None, float, float | None, int]]:
        """(suite, metric, base, value, delta, n): base and delta are None without a baseline."""
        out = []
        base = self.baseline.results if self.baseline is not None else {}
        for name, result in self.evaluated.results.items():
            other = base.get(name)
            for metric, value in result.metrics.items():
                reference = other.metrics.get(metric) if other is not None else None
                delta = value - reference if reference is not None else None
                out.append((name, metric, reference, value, delta, result.n.get(metric, 0)))
        return out

    def worst_case(self) -> dict[str, dict[str, Any]]:
        """Per attack target (``mc``, ``qa``): the attack with the highest post-attack score on the
        evaluated model, its value, and the oracle's under the same attack (None without one)."""
        from hookunlearn.evaluation.suites import get_suite

        oracle = self.oracle.results if self.oracle is not None else {}
        worst: dict[str, dict[str, Any]] = {}
        for name, result in self.evaluated.results.items():
            attack = get_suite(result.suite).attack if result.suite in _known_suites() else None
            if attack is None or attack[0] not in result.metrics:
                continue
            metric, default_target = attack
            target = str(result.config.get("target") or default_target)
            value = result.metrics[metric]
            at_oracle = oracle[name].metrics.get(metric) if name in oracle else None
            if target not in worst or value > worst[target]["value"]:
                worst[target] = {"suite": name, "metric": metric, "value": value, "oracle": at_oracle}
        return worst

    def table(self) -> list[dict[str, Any]]:
        """One row per metric: suite, metric, base, value, delta, oracle, gap (value - oracle), n;
        absent comparisons are None."""
        oracle = self.oracle.results if self.oracle is not None else {}
        out = []
        for suite, metric, base, value, delta, n in self.rows():
            reference = oracle.get(suite)
            at_oracle = reference.metrics.get(metric) if reference is not None else None
            gap = value - at_oracle if at_oracle is not None else None
            out.append(
                {"suite": suite, "metric": metric, "base": base, "value": value, "delta": delta,
                 "oracle": at_oracle, "gap": gap, "n": n}
            )  # fmt: skip
        return out


def _known_suites() -> set[str]:
    from hookunlearn.evaluation.suites import suite_names

    return set(suite_names())


def run_suites(
    model: LanguageModel, suites: Sequence[Suite], context: EvalContext, *, role: str = "model"
) -> dict[str, SuiteResult]:
    """Each suite's result by instance name; per-item samples (when the context logs them) go to
    ``role``'s files."""
    import contextlib

    results: dict[str, SuiteResult] = {}
    for suite in suites:
        name = suite.instance_name()
        if name in results:
            raise HookunlearnError(
                f"two suites are both named {name!r} (same suite on the same data); run them in separate "
                "evals, or give them different data (mc and qa also take a name=... option)."
            )
        context.say(f"{name}: running")
        recording = (
            context.samples.recording(role, name) if context.samples is not None else contextlib.nullcontext()
        )
        with recording:
            results[name] = suite.run(model, context)
    return results


def _same_suite(result: SuiteResult, suite: Suite) -> bool:
    import dataclasses

    config = json.loads(json.dumps(dataclasses.asdict(suite.config)))
    return result.suite == suite.name and result.version == suite.version and result.config == config


def evaluate(
    model: LanguageModel,
    suites: Sequence[Suite],
    *,
    baseline: LanguageModel | EvalReport | None = None,
    oracle: LanguageModel | EvalReport | None = None,
    context: EvalContext | None = None,
    options: Mapping[str, Any] | None = None,
    train_log: list[dict[str, Any]] | None = None,
) -> EvalReport:
    """Run ``suites`` on ``model``, on ``baseline`` and on ``oracle`` (each a model, or an earlier
    report of it whose matching suite results are reused; suites it lacks run on no model and show
    no value there). Suites that attack or probe a model compare it with the baseline (the
    context's ``baseline``) whichever model they run on."""
    from hookunlearn.models import model_info

    context = context or EvalContext()
    saved_baseline, saved_oracle = context.baseline, context.oracle
    if isinstance(oracle, HookedTransformer):
        context.oracle = oracle
    try:
        base_results: ModelResults | None = None
        if isinstance(baseline, HookedTransformer):
            context.baseline = baseline
            context.say("baseline")
            base_results = ModelResults(
                model_info(baseline).to_dict(), run_suites(baseline, suites, context, role="baseline")
            )
        context.say("evaluated model")
        evaluated = ModelResults(
            model_info(model).to_dict(), run_suites(model, suites, context, role="model")
        )
        oracle_results: ModelResults | None = None
        if isinstance(oracle, HookedTransformer):
            context.say("oracle")
            oracle_results = ModelResults(
                model_info(oracle).to_dict(), run_suites(oracle, suites, context, role="oracle")
            )
    finally:
        context.baseline, context.oracle = saved_baseline, saved_oracle
    options = dict(options or {})
    for role, given in (("baseline", baseline), ("oracle", oracle)):
        if not isinstance(given, EvalReport):
            continue
        reused, missing = reusable_results(given.evaluated, suites)
        if role == "baseline":
            base_results = reused
        else:
            oracle_results = reused
        if context.samples is not None:
            copy_stored_samples(given, reused, role, context)
        if missing:
            options[f"{role}_missing"] = missing
            context.say(
                f"{role} report has no reusable result for {', '.join(missing)} (absent, another "
                f"suite version or config, or a suite that needs the base model itself): no {role} value"
            )
    samples = context.samples.summary() if context.samples is not None else None
    return EvalReport(evaluated, base_results, options, train_log, oracle=oracle_results, samples=samples)


def copy_stored_samples(stored: EvalReport, reused: ModelResults, role: str, context: EvalContext) -> None:
    """Copy an earlier report's samples of its evaluated model for the results reused as ``role``
    (those it logged and still has on disk; the others get no samples)."""
    assert context.samples is not None
    files = ((stored.samples or {}).get("files") or {}).get("model") or {}
    for name in reused.results:
        entry = files.get(name)
        if stored.source is None or not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            continue
        source = stored.source / entry["path"]
        if source.is_file():
            n = entry.get("n")
            context.samples.copy(role, name, source, n if isinstance(n, int) else 0, str(source))


def reusable_results(stored: ModelResults, suites: Sequence[Suite]) -> tuple[ModelResults, list[str]]:
    """The stored results that can stand for these suites (same suite, version and config, and a
    suite whose result depends on nothing else), and the names of the suites without one."""
    kept: dict[str, SuiteResult] = {}
    missing: list[str] = []
    for suite in suites:
        name = suite.instance_name()
        previous = stored.results.get(name)
        if previous is not None and suite.reusable_from_report and _same_suite(previous, suite):
            kept[name] = previous
        else:
            missing.append(name)
    return ModelResults(stored.model, kept), sorted(missing)


# --- schema ------------------------------------------------------------------------------


def validate_report(data: Any) -> None:
    """Raise `HookunlearnError` naming the first field that breaks the report schema."""

    def need(condition: bool, where: str, what: str) -> None:
        if not condition:
            raise HookunlearnError(f"report.json: {where} {what}.")

    need(isinstance(data, Mapping), "the file", "must hold a JSON object")
    version = data.get("report_version")
    need(isinstance(version, int), "report_version", "is missing or not an integer")
    need(
        version in READABLE_VERSIONS,
        "report_version",
        f"is {version}; this hookunlearn reads versions {', '.join(map(str, READABLE_VERSIONS))} "
        "(re-run `hookunlearn eval`)",
    )
    for side in ("evaluated", "baseline", "oracle"):
        block = data.get(side)
        if side != "evaluated" and block is None:
            continue
        need(isinstance(block, Mapping), side, "must be an object")
        need(isinstance(block.get("model"), Mapping), f"{side}.model", "must be an object")
        results = block.get("results")
        need(isinstance(results, Mapping), f"{side}.results", "must be an object")
        for name, result in results.items():
            where = f"{side}.results[{name!r}]"
            need(isinstance(result, Mapping), where, "must be an object")
            for key, kind in (("suite", str), ("name", str), ("version", int), ("config", Mapping)):
                need(isinstance(result.get(key), kind), f"{where}.{key}", f"must be {kind.__name__}")
            metrics = result.get("metrics")
            need(isinstance(metrics, Mapping), f"{where}.metrics", "must be an object")
            for metric, value in metrics.items():
                need(
                    isinstance(value, (int, float)) and not isinstance(value, bool),
                    f"{where}.metrics[{metric!r}]",
                    "must be a number",
                )
            n = result.get("n", {})
            need(
                isinstance(n, Mapping) and all(isinstance(v, int) for v in n.values()),
                f"{where}.n",
                "must map metrics to integer counts",
            )
    log = data.get("train_log")
    need(log is None or isinstance(log, list), "train_log", "must be a list or null")


def read_report(path: str | Path) -> EvalReport:
    """An earlier report: ``report.json`` or the directory holding it."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise HookunlearnError(f"{path}: no report.json here; run `hookunlearn eval ... --out {path}` first.")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise HookunlearnError(f"{file}: not valid JSON ({error.msg} at line {error.lineno}).") from None
    report = EvalReport.from_dict(data)
    report.source = file.parent
    return report


# --- what a person reads --------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"


def _fmt_delta(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def to_markdown(report: EvalReport) -> str:
    """One table: suite, metric, base, unlearned, delta, n."""
    evaluated = report.evaluated.model.get("spec") or report.evaluated.model.get("name") or "model"
    lines = [f"# hookunlearn eval: {evaluated}", ""]
    if report.baseline is not None:
        base = report.baseline.model.get("spec") or report.baseline.model.get("name") or "baseline"
        lines += [f"Baseline: {base}", ""]
    rows = report.table()
    if report.oracle is not None:
        oracle = report.oracle.model.get("spec") or report.oracle.model.get("name") or "oracle"
        lines += [f"Oracle (never saw the forget set): {oracle}", ""]
        gaps = sorted((r for r in rows if r["gap"] is not None), key=lambda r: -abs(r["gap"]))
        if gaps:
            lines += ["## Gap to the oracle (unlearned - oracle; exact unlearning: 0)", ""]
            lines += ["| suite | metric | unlearned | oracle | gap |", "|---|---|---|---|---|"]
            lines += [
                f"| {r['suite']} | {r['metric']} | {_fmt(r['value'])} | {_fmt(r['oracle'])} | {_fmt_delta(r['gap'])} |"
                for r in gaps
            ]
            lines += ["", "## Every metric", ""]
        lines += [
            "| suite | metric | base | unlearned | delta | oracle | gap | n |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['suite']} | {r['metric']} | {_fmt(r['base'])} | {_fmt(r['value'])} | {_fmt_delta(r['delta'])} "
            f"| {_fmt(r['oracle'])} | {_fmt_delta(r['gap'])} | {r['n']} |"
            for r in rows
        ]
    else:
        lines += ["| suite | metric | base | unlearned | delta | n |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {r['suite']} | {r['metric']} | {_fmt(r['base'])} | {_fmt(r['value'])} | {_fmt_delta(r['delta'])} | {r['n']} |"
            for r in rows
        ]
    lines.append("")
    seconds = sum(r.seconds for r in report.evaluated.results.values())
    lines.append(
        f"Suites took {seconds:.1f} s on the evaluated model. Suite versions and configs: report.json."
    )
    for role, label in (("baseline", "base"), ("oracle", "oracle")):
        missing = report.options.get(f"{role}_missing")
        if missing:
            lines.append(
                f"No {label} value for {', '.join(missing)}: the {role} report has no result with the same "
                "suite version and config."
            )
    worst = report.worst_case()
    if worst:
        lines += ["", "Worst case over the attacks (the highest post-attack score, per target):", ""]
        for target, item in sorted(worst.items()):
            oracle_text = (
                f" (oracle under the same attack: {_fmt(item['oracle'])})"
                if item["oracle"] is not None
                else ""
            )
            lines.append(f"- {target}: {item['suite']} {item['metric']} = {_fmt(item['value'])}{oracle_text}")
        lines.append("")
    if report.train_log:
        lines.append("Loss curves of the unlearning run: plots/train_loss.png.")
    files = (report.samples or {}).get("files") or {}
    if files:
        lines += ["", "Per-item samples (`--log-samples`, one JSON record per item):", ""]
        for role, suites in files.items():
            for name, entry in suites.items():
                copied = " (copied from the reused report)" if entry.get("copied_from") else ""
                lines.append(f"- {role} / {name}: `{entry['path']}` ({entry.get('n', 0)} items){copied}")
    return "\n".join(lines) + "\n"


def write_plots(report: EvalReport, directory: Path) -> list[Path]:
    """One before/after bar chart per suite and the run's loss curves; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    base = report.baseline.results if report.baseline is not None else {}
    oracle = report.oracle.results if report.oracle is not None else {}
    for name, result in report.evaluated.results.items():
        metrics = list(result.metrics)
        if not metrics:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(metrics) + 2), 3.4))
        positions = range(len(metrics))
        other, at_oracle = base.get(name), oracle.get(name)
        bars = [(other, "base", "#9aa5b1")] if other is not None else []
        bars.append(
            (result, "unlearned" if other is not None or at_oracle is not None else "model", "#d1495b")
        )
        if at_oracle is not None:
            bars.append((at_oracle, "oracle", "#2e8b57"))
        width = 0.8 / len(bars)
        for index, (values, label, color) in enumerate(bars):
            offset = (index - (len(bars) - 1) / 2) * width
            ax.bar(
                [p + offset for p in positions],
                [values.metrics.get(m, float("nan")) for m in metrics],
                width,
                label=label,
                color=color,
            )
        ax.set_xticks(list(positions))
        ax.set_xticklabels(metrics, rotation=30, ha="right", fontsize=8)
        ax.set_title(name)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / f"{_safe(name)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if report.train_log:
        keys = sorted({k for row in report.train_log for k in row if k not in ("step", "lr", "elapsed_s")})
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for key in keys:
            points = [
                (row["step"], row[key]) for row in report.train_log if isinstance(row.get(key), (int, float))
            ]
            if points:
                ax.plot(*zip(*points, strict=True), label=key)
        ax.set_xlabel("step")
        ax.set_yscale("symlog")
        ax.set_title("unlearning loss terms")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / "train_loss.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_report(out: str | Path, report: EvalReport, manifest: Any, *, force: bool = False) -> Path:
    """``out/``: report.json, report.md, plots/*.png and the run manifest, written atomically."""
    from hookunlearn.artifacts import run_directory

    with run_directory(out, force=force) as tmp:
        write_report_files(tmp, report, manifest)
    return Path(out)


def write_report_files(directory: Path, report: EvalReport, manifest: Any) -> None:
    """report.json, report.md, plots/*.png and the manifest into ``directory`` (a run's staging
    directory, which may already hold the ``samples/`` the evaluation wrote)."""
    from hookunlearn.artifacts import MANIFEST_NAME, write_json

    write_json(directory / "report.json", report.to_dict())
    (directory / "report.md").write_text(to_markdown(report), encoding="utf-8")
    write_plots(report, directory / "plots")
    (directory / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")


def find_train_log(model_spec: str) -> list[dict[str, Any]] | None:
    """The ``train_log.jsonl`` of the run an exported model came from: for ``RUN/model`` (a
    directory with ``hookunlearn.json``), ``RUN/train_log.jsonl``; None for anything else."""
    path = Path(model_spec)
    if not (path / "hookunlearn.json").is_file():
        return None
    candidate = path.parent / "train_log.jsonl"
    if not candidate.is_file():
        return None
    rows = []
    for number, line in enumerate(candidate.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise HookunlearnError(f"{candidate}: line {number} is not JSON ({error.msg}).") from None
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows or None


__all__ = [
    "REPORT_VERSION",
    "EvalReport",
    "ModelResults",
    "copy_stored_samples",
    "evaluate",
    "find_train_log",
    "read_report",
    "reusable_results",
    "run_suites",
    "to_markdown",
    "validate_report",
    "write_plots",
    "write_report",
    "write_report_files",
]
