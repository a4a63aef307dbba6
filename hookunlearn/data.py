"""Datasets by spec: local files (jsonl/json/parquet/csv/txt), Hugging Face hub ids, world names.

A *data spec* is one of:
- a local file path: ``.jsonl``/``.json``, ``.parquet``, ``.csv``, or ``.txt`` (one text per line);
- ``world:NAME``: a file of the embedded world (``world:mc_hazard``, ``world:entity_qa``, ...);
- a hub id with optional config and split: ``cais/wmdp:wmdp-cyber`` or ``cais/mmlu:all@test``.
Records come back as plain dicts; schema checks live with the code that reads each schema.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hookunlearn.errors import DataError

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def load_records(spec: str | os.PathLike[str], *, split: str | None = None) -> list[dict[str, Any]]:
    """Load a dataset spec as a list of records (dicts)."""
    text = str(spec)
    from hookunlearn.sources import resolve

    plugin_path = resolve(text, "data")
    if plugin_path is not None:
        return load_records(plugin_path)
    path = Path(text)
    if path.suffix.lower() in _LOCAL_FORMATS or path.exists():
        return _load_local(path)
    if "/" in text and not text.startswith((".", "/")):
        return _load_hub(text, split)
    raise DataError(
        f"data {text!r}: not an existing file, a 'world:NAME', or a hub id like 'cais/wmdp:wmdp-cyber'."
    )


def _load_local(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise DataError(f"data file {path} does not exist.")
    if path.is_dir():
        raise DataError(f"data {path} is a directory; pass a .jsonl, .json, .parquet, .csv or .txt file.")
    fmt = _LOCAL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"data file {path}: unknown extension {path.suffix!r}; use one of {', '.join(_LOCAL_FORMATS)}."
        )
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty.")
    if fmt == "text":
        lines = [line for line in read_text_file(path).splitlines() if line.strip()]
        if not lines:
            raise DataError(f"data file {path} has no non-empty lines.")
        return [{"text": line} for line in lines]
    if fmt == "json":
        return _read_json(path)
    import datasets

    datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many types for unreadable files
        raise DataError(
            f"data file {path}: could not be read as {fmt} ({type(exc).__name__}: {exc})."
        ) from exc
    records = list(dataset)
    if not records:
        raise DataError(f"data file {path} has no records.")
    return records


def read_text_file(path: Path) -> str:
    """The file's text as UTF-8; other bytes are a `DataError` naming the file and the byte offset."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"data file {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, "
            f"line {line}); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
        ) from None


def local_records(spec: str) -> list[dict[str, Any]] | None:
    """The records of a local or plug-in data spec (None for a hub id, which is not read here)."""
    from hookunlearn.sources import resolve

    plugin_path = resolve(spec, "data")
    path = Path(plugin_path) if plugin_path is not None else Path(spec)
    if plugin_path is None and path.suffix.lower() not in _LOCAL_FORMATS and not path.exists():
        return None
    return _load_local(path)


def check_data_spec(spec: str, label: str) -> None:
    """Read a local or plug-in data file now (missing, a directory, not UTF-8, invalid JSON, empty:
    a `DataError` naming ``label``); hub ids are left to the loader. Records are 1-based."""
    from hookunlearn.sources import resolve

    plugin_path = resolve(spec, "data")
    path = Path(plugin_path) if plugin_path is not None else Path(spec)
    if plugin_path is None and path.suffix.lower() not in _LOCAL_FORMATS and not path.exists():
        return  # a hub id (or an error the loader words)
    try:
        _load_local(path)
    except DataError as exc:
        raise DataError(f"{label}: {exc}") from None


def _read_json(path: Path) -> list[dict[str, Any]]:
    """JSON Lines (one object per line), or one JSON array of objects; read without a cache."""
    text = read_text_file(path)
    records: list[Any] = []
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            for line_number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(
                            f"data file {path}: invalid JSON at line {line_number} ({exc.msg})."
                        ) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"data file {path}: invalid JSON at line {exc.lineno} ({exc.msg}).") from exc
    if not records:
        raise DataError(f"data file {path} has no records.")
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"data file {path}: record {bad + 1} is not a JSON object.")
    return records


def _load_hub(spec: str, split: str | None) -> list[dict[str, Any]]:
    """``path[:config][@split]``; without a split: ``test`` if present, else ``train``, else the only one."""
    name_part, _, split_part = spec.partition("@")
    path, _, config = name_part.partition(":")
    import datasets

    datasets.disable_progress_bars()
    try:
        loaded = datasets.load_dataset(path, config or None)
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        why = (
            "offline mode is set (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)"
            if offline
            else f"{type(exc).__name__}: {exc}"
        )
        raise DataError(
            f"dataset {spec!r} could not be loaded from the Hugging Face Hub ({why}). "
            "Pass a local .jsonl/.parquet/.csv file in the same schema instead."
        ) from exc
    wanted = split_part or split
    splits = list(loaded)
    if wanted is None:
        wanted = next((s for s in ("test", "train") if s in splits), splits[0] if len(splits) == 1 else None)
    if wanted not in splits:
        raise DataError(
            f"dataset {spec!r} has splits {', '.join(splits)}; choose one with '{name_part}@SPLIT'."
        )
    return list(loaded[wanted])


def load_texts(spec: str | os.PathLike[str], column: str = "text") -> list[str]:
    """The non-empty strings of one column of a dataset spec (a corpus)."""
    records = load_records(spec)
    require_columns(records, [column], str(spec))
    texts = [record[column] for record in records]
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise DataError(f"{spec}: column {column!r} of record {bad + 1} is not text.")
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise DataError(f"{spec}: column {column!r} has no non-empty text.")
    return texts


def require_columns(records: Sequence[dict[str, Any]], columns: Sequence[str], source: str) -> None:
    """Raise a `DataError` naming the missing columns (checked on every record)."""
    if not records:
        raise DataError(f"{source}: no records.")
    for index, record in enumerate(records):
        missing = [column for column in columns if column not in record]
        if missing:
            raise DataError(
                f"{source}: record {index + 1} lacks column(s) {', '.join(missing)}; "
                f"expected columns: {', '.join(columns)} (found: {', '.join(record)})."
            )
