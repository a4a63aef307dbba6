"""Entity prompts: the rows that name known, unknown and target entities (torch-free).

Read by `select --objective entity`, by the methods that read entity prompts (their spec says
so), and by the probe suite. One parser, one record type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hookunlearn.errors import DataError


@dataclass(frozen=True)
class EntityPrompt:
    prompt: str
    entity_end_char: int
    set: str
    """``known``, ``unknown`` or ``target``."""
    fold: str
    """``select`` (used to score latents) or ``heldout`` (used to report the scores)."""
    entity_start_char: int | None = None
    """First character of the entity (``entity_start_char`` column, or from ``entity``); None
    when unknown, and then only the last entity token counts as the entity span."""


ENTITY_SETS: tuple[str, ...] = ("known", "unknown", "target")


def parse_entity_prompts(
    records: Sequence[Mapping[str, Any]], source: str, *, template: str | None = "bare"
) -> list[EntityPrompt]:
    """Rows with ``prompt``, ``set`` and either ``entity_end_char`` or ``entity`` (its last
    occurrence in the prompt); optional ``entity_start_char``, ``fold`` (else a stable 50/50 split by entity) and
    ``template`` (rows are filtered to ``template`` when the column exists)."""
    if not records:
        raise DataError(f"{source}: no entity prompts.")
    if template is not None and "template" in records[0]:
        records = [r for r in records if r.get("template") == template]
        if not records:
            raise DataError(f"{source}: no rows with template {template!r}.")
    prompts = []
    for index, record in enumerate(records, start=1):
        missing = [c for c in ("prompt", "set") if c not in record]
        if missing or ("entity_end_char" not in record and "entity" not in record):
            raise DataError(
                f"{source}: record {index} needs columns prompt, set and entity_end_char (or entity); "
                f"found {', '.join(record)}."
            )
        if record["set"] not in ENTITY_SETS:
            raise DataError(
                f"{source}: record {index} has set {record['set']!r}; use one of {', '.join(ENTITY_SETS)}."
            )
        prompt = record["prompt"]
        end = record.get("entity_end_char")
        start = record.get("entity_start_char")
        if end is None:
            start = prompt.rfind(record["entity"])
            if start < 0:
                raise DataError(
                    f"{source}: record {index}: entity {record['entity']!r} is not in its prompt."
                )
            end = start + len(record["entity"])
        elif start is None and isinstance(record.get("entity"), str) and record["entity"]:
            candidate = int(end) - len(record["entity"])
            start = candidate if prompt[candidate : int(end)] == record["entity"] else None
        if not 0 < end <= len(prompt):
            raise DataError(f"{source}: record {index}: entity_end_char {end} is outside the prompt.")
        if start is not None and not 0 <= start < end:
            raise DataError(
                f"{source}: record {index}: entity_start_char {start} must be in [0, entity_end_char)."
            )
        fold = record.get("fold") or _stable_fold(str(record.get("entity", prompt)))
        prompts.append(
            EntityPrompt(prompt, int(end), record["set"], fold, None if start is None else int(start))
        )
    for name in ("known", "unknown"):
        if not any(p.set == name and p.fold == "select" for p in prompts):
            raise DataError(
                f"{source}: no {name!r} entities in the select fold; both known and unknown are needed."
            )
    return prompts


def _stable_fold(key: str) -> str:
    return "select" if hashlib.sha256(key.encode()).digest()[0] % 2 == 0 else "heldout"
