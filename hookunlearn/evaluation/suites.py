"""Registered evaluation suites: one class per suite, a typed config, a versioned result.

A suite is run as ``SUITE(config).run(model, context)`` and returns a `SuiteResult`: flat
``metrics`` (name -> float, the numbers a report compares between the base and the unlearned
model), their ``n`` and free-form ``details``. ``hookunlearn eval --suite NAME:key=value,...``
builds the config from the string (`parse_suite_spec`); unknown suites and keys are clear errors.

Adding a suite: subclass `Suite`, give it ``name``, ``version``, a frozen dataclass ``Config`` and
``run``; decorate with `register`. Bump ``version`` whenever the numbers it produces change for
the same config, so old reports are never compared with new ones silently. A suite with per-item
outcomes passes one record per item to ``context.log_sample`` when ``context.samples`` is set
(``eval --log-samples``; the fields are documented in docs/evaluation.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hookunlearn.backends.types import LanguageModel
from hookunlearn.errors import HookunlearnError

SAMPLES_FORMAT = 1
"""Version of the per-item sample records (``eval --log-samples``); bumped when a field changes meaning."""

ID_COLUMNS: tuple[str, ...] = ("id", "item_id", "question_id", "fact_id")
"""Columns that name an item in the data; the first one a record has is its ``item_id``."""


def item_id(record: Mapping[str, Any], doc_id: int) -> Any:
    """The item's own id (the first of `ID_COLUMNS` the record has), else its ``doc_id``."""
    for column in ID_COLUMNS:
        value = record.get(column)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            return value
    return doc_id


def prompt_hash(text: str) -> str:
    """A short fingerprint of a prompt (sha256, 16 hex digits): two runs scored the same text
    when their hashes agree."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class SampleLog:
    """Per-item records of an evaluation, written as JSON lines while suites run:
    ``root/samples/<role>/<suite instance>.jsonl`` (one file per model role and suite instance;
    a suite that logs nothing gets no file). Memory stays bounded: nothing is kept but counts."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files: dict[str, dict[str, dict[str, Any]]] = {}
        """role -> suite instance -> ``{"path": relative to root, "n": records}`` (and
        ``copied_from`` for a reused result's records)."""
        self._current: tuple[str, str] | None = None
        self._handle: Any = None

    def _relative(self, role: str, suite: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in suite)
        if safe != suite:  # two names that sanitise alike ("a/b", "a_b") must not share a file
            import hashlib

            safe += "-" + hashlib.sha256(suite.encode("utf-8")).hexdigest()[:8]
        return f"samples/{role}/{safe}.jsonl"

    @contextlib.contextmanager
    def recording(self, role: str, suite: str) -> Iterator[None]:
        """Send the records written inside the block to ``role``'s file for ``suite``."""
        if self._current is not None:
            raise RuntimeError(f"samples of {self._current} are still being recorded")
        self._current = (role, suite)
        try:
            yield
        finally:
            self._current = None
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def write(self, record: Mapping[str, Any]) -> None:
        if self._current is None:
            raise RuntimeError("a sample was logged outside SampleLog.recording(role, suite)")
        role, suite = self._current
        if self._handle is None:
            relative = self._relative(role, suite)
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("w", encoding="utf-8")
            self.files.setdefault(role, {})[suite] = {"path": relative, "n": 0}
        self._handle.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
        self.files[role][suite]["n"] += 1

    def copy(self, role: str, suite: str, source: Path, n: int, origin: str) -> None:
        """Take ``source`` (an earlier report's samples of a reused result) as ``role``'s file."""
        import shutil

        relative = self._relative(role, suite)
        (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.root / relative)
        from hookunlearn.hf_files import portable_path

        # a report travels: the origin is written relative to this one (or hashed), not absolute
        copied_from = portable_path(str(Path(origin).resolve()), self.root)
        self.files.setdefault(role, {})[suite] = {"path": relative, "n": n, "copied_from": copied_from}

    def summary(self) -> dict[str, Any]:
        """What a report records: the format version and the files by role and suite."""
        return {"format": SAMPLES_FORMAT, "files": self.files}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if hasattr(value, "item"):  # a numpy or torch scalar
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass
class EvalContext:
    """What suites may need beside the model: shared options and, for the activation-level and
    relearning suites, the base model and the run's subspace/SAE."""

    batch_size: int = 32
    baseline: Any = None
    """The base (pre-unlearning) HookedTransformer, when the report has one loaded."""
    subspace: Any = None
    """A `hookunlearn.subspace.Subspace` (probe suite: centroids, selected latents, hook)."""
    sae: Any = None
    """The SAE of ``subspace``."""
    oracle: Any = None
    """The oracle HookedTransformer (never saw the forget set), when the report has one loaded."""
    progress: Callable[[str], None] | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    """Suites share work through this (e.g. the probe's base activations)."""
    samples: SampleLog | None = None
    """Where per-item records go (``eval --log-samples``); None when off: suites then build none
    (test ``context.samples is not None`` before making a record)."""

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def log_sample(self, record: Mapping[str, Any]) -> None:
        """Record one item's outcome (a no-op when samples are off)."""
        if self.samples is not None:
            self.samples.write(record)


@dataclass
class SuiteResult:
    suite: str
    """Registered suite name (``mc``, ``gsm8k``, ...)."""
    name: str
    """This instance's name in a report (e.g. ``wmdp-cyber``, ``mc_hazard``); unique per report."""
    version: int
    config: dict[str, Any]
    metrics: dict[str, float]
    n: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SuiteResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Suite:
    name: ClassVar[str]
    version: ClassVar[int] = 1
    Config: ClassVar[type]
    summary: ClassVar[str] = ""
    attack: ClassVar[tuple[str, str] | None] = None
    """For an attack: (its post-attack metric, its default target: ``mc`` for a topic's MC accuracy,
    ``qa`` for forget-people recall; a ``target`` config field overrides it). Reports take the
    worst case over the attacks per target."""
    reusable_from_report: ClassVar[bool] = True
    """Whether a stored result can stand for the base model in a later report (False when the
    result depends on more than the suite's config, e.g. the probe's subspace)."""

    def __init__(self, config: Any, explicit: frozenset[str] = frozenset(), label: str | None = None) -> None:
        self.config = config
        self.explicit = explicit
        """Config fields the user set (``NAME:key=value``); shared options such as ``--seed``
        and ``--limit`` leave these alone."""
        self.label = label
        """The name given with ``name=`` (every suite takes it), which names it in the report."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("instance_name")
        if own is not None:  # ``name=`` wins over every suite's own naming

            def named(self: Suite, _own: Any = own) -> str:
                return self.label or _own(self)

            named.__doc__ = own.__doc__
            cls.instance_name = named  # type: ignore[method-assign]

    def with_defaults(self, **values: Any) -> None:
        """Set config fields the user did not set explicitly (the fields the config has)."""
        names = {f.name for f in dataclasses.fields(self.config)}
        changes = {k: v for k, v in values.items() if k in names and k not in self.explicit}
        if changes:
            self.config = dataclasses.replace(self.config, **changes)

    def instance_name(self) -> str:
        """How this suite is named in a report (suites with a data spec name it after the data)."""
        return self.label or self.name

    def check(self) -> None:
        """Raise `HookunlearnError` for inputs a user can fix that are known before any model is
        loaded (a missing file, an unknown task); ``eval`` calls it for every suite first, so a
        bad input never throws away the suites that ran before it. Default: every local or
        plug-in data file the config names is read now (missing, a directory, not UTF-8, bad JSON)."""
        check_data_fields(self)

    def run(self, model: LanguageModel, context: EvalContext) -> SuiteResult:
        start = time.perf_counter()
        metrics, n, details = self.compute(model, context)
        return SuiteResult(
            suite=self.name,
            name=self.instance_name(),
            version=self.version,
            config=dataclasses.asdict(self.config),
            metrics={k: float(v) for k, v in metrics.items()},
            n={k: int(v) for k, v in n.items()},
            details=details,
            seconds=time.perf_counter() - start,
        )

    def compute(
        self, model: LanguageModel, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
        raise NotImplementedError


SUITES: dict[str, type[Suite]] = {}


def register(cls: type[Suite]) -> type[Suite]:
    if cls.name in SUITES:
        raise ValueError(f"suite {cls.name!r} is registered twice")
    SUITES[cls.name] = cls
    return cls


SUITE_MODULES: tuple[str, ...] = (
    "hookunlearn.evaluation.activation",
    "hookunlearn.evaluation.attacks",
    "hookunlearn.evaluation.gsm8k",
    "hookunlearn.evaluation.harness",
    "hookunlearn.evaluation.mia",
    "hookunlearn.evaluation.robustness",
    "hookunlearn.evaluation.standard",
    "hookunlearn.evaluation.truthfulqa",
)
"""The modules whose suites register themselves on import (a new suite module: one line here)."""


def _load_all() -> None:
    import importlib

    for module in SUITE_MODULES:
        importlib.import_module(module)


def suite_names() -> list[str]:
    _load_all()
    return sorted(SUITES)


def get_suite(name: str) -> type[Suite]:
    _load_all()
    if name not in SUITES:
        raise HookunlearnError(f"suite {name!r} is unknown; available suites: {', '.join(sorted(SUITES))}.")
    return SUITES[name]


def _convert(value: str, annotation: Any, key: str, suite: str) -> Any:
    """Turn the text of ``key=value`` into the field's type (int, float, bool, str, optional, tuple)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return _convert(value, candidate, key, suite)
            except HookunlearnError as error:
                errors.append(str(error))
        raise HookunlearnError(errors[0] if errors else f"suite {suite}: {key}={value!r} is not valid.")
    if origin is typing.Literal:
        if value not in args:
            raise HookunlearnError(
                f"suite {suite}: {key}={value!r}; choose one of {', '.join(map(str, args))}."
            )
        return value
    if origin is tuple:
        item = args[0] if args else str
        return tuple(_convert(part, item, key, suite) for part in value.split("|") if part)
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)
    except ValueError:
        raise HookunlearnError(
            f"suite {suite}: {key}={value!r} is not a valid {annotation.__name__}."
        ) from None
    return value


def make_config(suite: type[Suite], options: Mapping[str, Any]) -> Any:
    """``suite.Config`` with ``options`` (strings are converted to the field types)."""
    hints = typing.get_type_hints(suite.Config)
    fields = {f.name for f in dataclasses.fields(suite.Config)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise HookunlearnError(
            f"suite {suite.name!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(sorted(fields))}."
        )
    values = {
        key: _convert(value, hints[key], key, suite.name) if isinstance(value, str) else value
        for key, value in options.items()
    }
    try:
        return suite.Config(**values)
    except TypeError as error:  # a required field is missing
        raise HookunlearnError(f"suite {suite.name!r}: {error}.") from None


def check_data_fields(suite: Suite) -> None:
    """Read each text field of ``suite``'s config that names a local or plug-in data file."""
    from hookunlearn.data import check_data_spec

    for f in dataclasses.fields(suite.config):
        value = getattr(suite.config, f.name)
        if isinstance(value, str) and value and ("data" in f.name or f.name in _DATA_FIELDS):
            check_data_spec(value, f"suite {suite.instance_name()} {f.name}={value}")


_DATA_FIELDS = frozenset({"entities", "members", "nonmembers", "forget_texts"})
"""Config fields that name data without ``data`` in their name."""


def parse_suite_spec(text: str) -> Suite:
    """``NAME`` or ``NAME:key=value,key=value`` -> a configured suite.

    Values with commas are not supported here (use a config file); tuples use ``|``."""
    name, _, rest = text.partition(":")
    suite = get_suite(name.strip())
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise HookunlearnError(f"--suite {text!r}: options are KEY=VALUE separated by commas.")
        options[key.strip()] = value.strip()
    label = None
    if "name" in options and "name" not in {f.name for f in dataclasses.fields(suite.Config)}:
        label = options.pop("name")  # every suite takes name=; for most it is not a config field
        if not label:
            raise HookunlearnError(f"--suite {text!r}: name= needs a value.")
    return suite(make_config(suite, options), frozenset(options), label=label)


__all__ = [
    "ID_COLUMNS",
    "SAMPLES_FORMAT",
    "SUITES",
    "EvalContext",
    "SampleLog",
    "Suite",
    "SuiteResult",
    "get_suite",
    "item_id",
    "make_config",
    "parse_suite_spec",
    "prompt_hash",
    "register",
    "suite_names",
]
