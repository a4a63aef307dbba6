"""Write the architecture tables of docs/loading.md from the code, so they cannot drift.

    python scripts/gen_backend_docs.py            # (re)write the marked section of docs/loading.md
    python scripts/gen_backend_docs.py --check    # exit 1 if it differs from what it would write

The section between ``<!-- backends:begin -->`` and ``<!-- backends:end -->`` lists what each
backend supports: the hooked backend's `hookunlearn.architectures.SUPPORTED_MODEL_TYPES`, the
bridge's tested set (`hookunlearn.backends.bridge.TESTED_ARCHITECTURES`, the keys of its test
matrix) and how many architectures TransformerLens's bridge has an adapter for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "loading.md"
BEGIN, END = "<!-- backends:begin -->", "<!-- backends:end -->"


def section() -> str:
    sys.path.insert(0, str(ROOT))
    from hookunlearn.architectures import SUPPORTED_MODEL_TYPES
    from hookunlearn.backends import BACKENDS
    from hookunlearn.backends.bridge import TESTED_ARCHITECTURES, bridge_architectures

    lines = [BEGIN, "", "| backend | what it is |", "|---|---|"]
    lines += [f"| `{spec.name}` | {spec.summary} |" for spec in BACKENDS.values()]
    lines += [
        "",
        f"The `hooked` backend loads `model_type` {', '.join(f'`{name}`' for name in SUPPORTED_MODEL_TYPES)}.",
        "",
        "The `bridge` backend is tested on these, each on a tiny random-init checkpoint through "
        "select -> build -> unlearn -> export -> eval (`tests/integration/test_bridge_backend.py`, `pytest -m bridge`):",
        "",
        "| test key | HF class | family | status | also `hooked` |",
        "|---|---|---|---|---|",
    ]
    for arch in TESTED_ARCHITECTURES.values():
        lines.append(
            f"| `{arch.model_type}` | `{arch.hf_class}` | {arch.family} | {arch.status} | {'yes' if arch.hooked else 'no'} |"
        )
    lines += [
        "",
        f"Other architectures with a TransformerLens 3.9 bridge adapter ({len(bridge_architectures())} HF classes, "
        "encoders and multimodal models among them) load too, untested; every export is still verified by reload.",
        "",
        END,
    ]
    return "\n".join(lines)


def rendered(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + section() + text[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    current = args.doc.read_text(encoding="utf-8")
    wanted = rendered(current)
    if args.check:
        if wanted != current:
            print(f"{args.doc} is stale: run python scripts/gen_backend_docs.py")
            return 1
        return 0
    args.doc.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
