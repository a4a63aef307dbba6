"""Portable Hugging Face checkpoint files: what every client reads the same way.

A checkpoint leaves hookunlearn and is read by ``transformers`` 4 and 5, lm-evaluation-harness,
vLLM and the Hub. Each reads only the files, so what hookunlearn does at run time has to be in
them. This module (torch-free, JSON only) makes the tokenizer files and the rest portable:

- **BOS in the tokenizer.** hookunlearn scores and trains with a BOS token in front when the
  model's TransformerLens config says so (``default_prepend_bos``); a client calls the tokenizer
  with its defaults (``add_special_tokens=True``) and adds nothing itself. `add_bos_post_processor`
  writes a ``TemplateProcessing`` post-processor into ``tokenizer.json`` that prepends BOS, so the
  tokenizer adds it exactly when the model expects it; ``add_special_tokens=False`` still gives
  the bare text's tokens, which is how hookunlearn itself encodes.
- **A tokenizer config both major versions load.** ``transformers`` 5 saves
  ``"tokenizer_class": "TokenizersBackend"``, a class ``transformers`` 4 does not have; the
  generic fast tokenizer is ``PreTrainedTokenizerFast`` in both (5 maps it to its backend). The
  load-time keys ``is_local`` and ``local_files_only`` describe the machine that saved the files
  and are dropped; ``model_max_length`` becomes the model's context length instead of the
  ``1e30`` "unknown" sentinel.
- **No local paths.** `portable_paths` rewrites absolute paths in a JSON record relative to the
  checkpoint directory when that is short, else to a hash of the path (its last component kept).
- **Ordinary file modes** are given by `hookunlearn.artifacts.run_directory` to every file of
  every output directory (safetensors writes ``0600``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_RELATIVE_PARENTS",
    "TOKENIZER_CLASS_ALIASES",
    "add_bos_post_processor",
    "portable_path",
    "portable_paths",
    "portable_tokenizer_config",
    "portable_tokenizer_files",
    "post_processor_adds",
    "remove_bos_post_processor",
]

TOKENIZER_CLASS_ALIASES: dict[str, str] = {"TokenizersBackend": "PreTrainedTokenizerFast"}
"""``transformers`` 5 class names in ``tokenizer_config.json`` -> a name 4.x and 5.x both load."""

LOCAL_STATE_KEYS: tuple[str, ...] = ("is_local", "local_files_only", "cache_dir", "name_or_path")
"""``tokenizer_config.json`` keys that describe the saving machine, not the tokenizer."""

UNKNOWN_MAX_LENGTH = 1e20
"""``model_max_length`` at or above this is ``transformers``' "no limit recorded" sentinel (1e30)."""

MAX_RELATIVE_PARENTS = 2
"""A path is written relative to the checkpoint when it climbs at most this many ``..``."""


# ---------------------------------------------------------------------------------------------
# tokenizer.json: BOS through the post-processor
# ---------------------------------------------------------------------------------------------


def _special(token: str) -> dict[str, Any]:
    return {"SpecialToken": {"id": token, "type_id": 0}}


def _template(bos: str, bos_id: int) -> dict[str, Any]:
    return {
        "type": "TemplateProcessing",
        "single": [_special(bos), {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            _special(bos),
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


def post_processor_adds(tokenizer_json: Mapping[str, Any], token: str) -> bool:
    """Whether ``tokenizer.json``'s post-processor puts ``token`` first in a single sequence."""

    def adds(processor: Mapping[str, Any] | None) -> bool:
        if not processor:
            return False
        kind = processor.get("type")
        if kind == "Sequence":
            return any(adds(p) for p in processor.get("processors") or [])
        if kind == "TemplateProcessing":
            first = (processor.get("single") or [{}])[0]
            return (first.get("SpecialToken") or {}).get("id") == token
        if kind in ("BertProcessing", "RobertaProcessing"):
            return (processor.get("cls") or [None])[0] == token
        return False

    return adds(tokenizer_json.get("post_processor"))


def add_bos_post_processor(tokenizer_json: Mapping[str, Any], bos: str, bos_id: int) -> dict[str, Any]:
    """``tokenizer_json`` whose post-processor prepends ``bos`` (id ``bos_id``) to every encoding.

    An existing ``TemplateProcessing`` gets the BOS in front of both templates; a ``ByteLevel``
    processor (GPT-2's, for offsets) is kept and followed by the template in a ``Sequence``; none
    becomes the template. Other processors (BERT/RoBERTa) already add their own specials and are
    refused with ValueError."""
    state = copy.deepcopy(dict(tokenizer_json))
    if post_processor_adds(state, bos):
        return state
    current = state.get("post_processor")
    template = _template(bos, bos_id)
    if not current:
        state["post_processor"] = template
    elif current.get("type") == "TemplateProcessing":
        current = copy.deepcopy(current)
        current["single"] = [_special(bos), *current.get("single", [])]
        current["pair"] = [_special(bos), *current.get("pair", [])]
        current.setdefault("special_tokens", {})[bos] = template["special_tokens"][bos]
        state["post_processor"] = current
    elif current.get("type") == "ByteLevel":
        state["post_processor"] = {"type": "Sequence", "processors": [current, template]}
    elif current.get("type") == "Sequence":
        state["post_processor"] = {**current, "processors": [*current.get("processors", []), template]}
    else:
        raise ValueError(
            f"the tokenizer's post-processor is {current.get('type')!r}, which adds its own special tokens "
            "but not BOS first; pass a tokenizer that adds BOS, or export without adding it"
        )
    return state


# ---------------------------------------------------------------------------------------------
# tokenizer_config.json
# ---------------------------------------------------------------------------------------------


def portable_tokenizer_config(
    config: Mapping[str, Any], context_length: int | None
) -> tuple[dict[str, Any], list[str]]:
    """(``tokenizer_config.json`` that transformers 4 and 5 load the same way, what was changed)."""
    out = dict(config)
    changes: list[str] = []
    name = out.get("tokenizer_class")
    if isinstance(name, str) and name in TOKENIZER_CLASS_ALIASES:
        out["tokenizer_class"] = TOKENIZER_CLASS_ALIASES[name]
        changes.append(f"tokenizer_class {name} -> {out['tokenizer_class']} (loads in transformers 4 and 5)")
    for key in LOCAL_STATE_KEYS:
        if key in out:
            del out[key]
            changes.append(f"dropped {key} (state of the machine that saved it)")
    length = out.get("model_max_length")
    unknown = not isinstance(length, (int, float)) or isinstance(length, bool) or length >= UNKNOWN_MAX_LENGTH
    if context_length is not None and unknown:
        out["model_max_length"] = int(context_length)
        changes.append(f"model_max_length -> {int(context_length)} (the model's context length)")
    return out, changes


def remove_bos_post_processor(tokenizer_json: Mapping[str, Any], bos: str) -> dict[str, Any]:
    """``tokenizer_json`` whose post-processor no longer puts ``bos`` first (the inverse of
    `add_bos_post_processor`); BERT/RoBERTa processors are refused with ValueError."""
    state = copy.deepcopy(dict(tokenizer_json))

    def strip(processor: dict[str, Any]) -> dict[str, Any]:
        kind = processor.get("type")
        if kind == "Sequence":
            return {**processor, "processors": [strip(p) for p in processor.get("processors") or []]}
        if kind == "TemplateProcessing":
            out = copy.deepcopy(processor)
            for key in ("single", "pair"):
                items = out.get(key) or []
                if items and (items[0].get("SpecialToken") or {}).get("id") == bos:
                    out[key] = items[1:]
            return out
        if kind in ("BertProcessing", "RobertaProcessing"):
            raise ValueError(f"the tokenizer's {kind} post-processor always adds its own specials")
        return processor

    if state.get("post_processor"):
        state["post_processor"] = strip(state["post_processor"])
    return state


def portable_tokenizer_files(
    directory: Path,
    *,
    bos: str | None,
    bos_id: int | None,
    want_bos: bool | None,
    context_length: int | None,
) -> tuple[bool | None, list[str]]:
    """Rewrite ``directory``'s ``tokenizer_config.json`` (`portable_tokenizer_config`) and make
    its ``tokenizer.json`` prepend ``bos`` with its defaults when ``want_bos`` is True
    (`add_bos_post_processor`), not prepend it when False (`remove_bos_post_processor`), or leave
    it when None. ``add_bos_token`` in the config follows, for tokenizer classes that rebuild their
    post-processor from it on load. Returns (whether ``tokenizer.json`` now prepends ``bos``, or
    None without one; what changed).

    Raises ValueError when BOS is asked for and cannot be added or removed (no BOS token, a
    processor that cannot take it)."""
    notes: list[str] = []
    tokenizer_json, tokenizer_config = directory / "tokenizer.json", directory / "tokenizer_config.json"
    if tokenizer_config.is_file():
        settings, changes = portable_tokenizer_config(read_json(tokenizer_config), context_length)
        if (
            want_bos is not None
            and tokenizer_json.is_file()
            and settings.get("add_bos_token") is not want_bos
        ):
            settings["add_bos_token"] = want_bos
            changes.append(f"add_bos_token -> {str(want_bos).lower()}")
        if changes:
            tokenizer_config.write_text(
                json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
        notes += [f"tokenizer_config.json: {change}" for change in changes]
    if not tokenizer_json.is_file():
        return None, notes
    state = read_json(tokenizer_json)
    adds = isinstance(bos, str) and post_processor_adds(state, bos)
    if want_bos is True and not adds:
        if not isinstance(bos, str) or not isinstance(bos_id, int):
            raise ValueError("the tokenizer defines no bos_token to prepend")
        state = add_bos_post_processor(state, bos, bos_id)
        notes.append(
            f"tokenizer.json: a post-processor now prepends BOS {bos!r} (id {bos_id}) with the tokenizer's "
            "defaults; add_special_tokens=False still gives the bare text's tokens"
        )
    elif want_bos is False and adds and isinstance(bos, str):
        state = remove_bos_post_processor(state, bos)
        notes.append(f"tokenizer.json: the post-processor no longer prepends BOS {bos!r}")
    else:
        return adds, notes
    tokenizer_json.write_text(json.dumps(state, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return bool(want_bos), notes


# ---------------------------------------------------------------------------------------------
# Paths and modes
# ---------------------------------------------------------------------------------------------

# An absolute POSIX path inside a longer string ("copied from /home/a/model (tokenizer.json)"):
# starts at a '/' that does not follow a word character, ':' (URLs) or another '/'.
_ABSOLUTE = re.compile(r"(?<![\w:/.~-])/(?:[^\s'\"(),;]+)")


def portable_path(path: str, base: str | os.PathLike[str]) -> str:
    """``path`` written without the local machine's layout: ``<hookunlearn>/...`` inside the
    installed package (the embedded world), relative to ``base`` when both share a directory below
    the root and it climbs at most `MAX_RELATIVE_PARENTS` levels, else ``<sha256:12 hex of the
    absolute path>/<last component>`` (a user who has the path can check it). Relative paths are kept."""
    if not os.path.isabs(path):
        return path
    normal = os.path.normpath(path)
    package = os.path.dirname(os.path.abspath(__file__))
    if normal == package or normal.startswith(package + os.sep):
        return "<hookunlearn>/" + os.path.relpath(normal, package).replace(os.sep, "/")
    base = os.path.abspath(base)
    try:
        shared = os.path.commonpath([normal, base])
        relative = os.path.relpath(normal, base) if shared != os.path.dirname(shared) else None
    except ValueError:  # another drive on Windows
        relative = None
    if relative is not None:
        parts = Path(relative).parts
        if parts.count("..") <= MAX_RELATIVE_PARENTS and all(p == ".." for p in parts[: parts.count("..")]):
            return relative
    digest = hashlib.sha256(normal.encode("utf-8")).hexdigest()[:12]
    return f"<sha256:{digest}>/{os.path.basename(normal) or normal}"


def portable_paths(value: Any, base: str | os.PathLike[str]) -> Any:
    """``value`` (JSON data) with every absolute path in its strings made `portable_path`."""
    if isinstance(value, str):
        return _ABSOLUTE.sub(lambda match: portable_path(match.group(0), base), value)
    if isinstance(value, Mapping):
        return {key: portable_paths(item, base) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_paths(item, base) for item in value]
    return value


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
