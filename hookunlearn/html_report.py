"""One self-contained HTML page per run directory (``report.html``), rendered from the
directory's own files, so it can be rendered again later (``hookunlearn report RUN_DIR``).

- ``select`` (kind ``selection``): the layer scores, the feature table, and for the chosen layer's
  best latents a card each: top-activating contexts with token highlights, direct logit effects,
  a Neuronpedia link when the SAE has one (``latents.json``, see `hookunlearn.interpret`).
- ``build`` (kind ``subspace``): k, the relevant and irrelevant latents, the diagnostics, and the
  relevant latents' cards from the selection it was built from (when that directory is there).
- ``eval`` (kind ``report``, ``report.json`` of an `EvalReport`): every metric with base,
  unlearned, delta and oracle; the selected latents' activity before and after unlearning (the
  ``probe`` suite's ``latent_activity`` metrics) with their cards; the report's plots.
- ``demo`` (kind ``report``, ``report.json`` with ``rows``): the comparison table and a chart.

The page needs no network: CSS inline, figures as inline SVG or base64 PNG, no script, no font;
the only links are to Neuronpedia. Torch-free (stdlib only).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hookunlearn.artifacts import staged_file
from hookunlearn.errors import ArtifactError

REPORT_NAME = "report.html"
CARDS_SHOWN = 20
"""Latent cards on a selection's page (its ``latents.json`` may hold more)."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;color:#1d2430;background:#fff;line-height:1.4;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin-top:28px;border-bottom:1px solid #d8dde3}
h3{font-size:1.05em;margin:0 0 6px 0}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:0.88em}
th,td{border:1px solid #d8dde3;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#5b6675;font-size:0.9em}.card{border:1px solid #d8dde3;border-radius:6px;padding:10px 14px;
margin:12px 0}.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.85em;margin:2px 0;
white-space:nowrap;overflow-x:auto}.tok{white-space:pre;border-radius:2px}
.center{outline:1px solid #b03a00;font-weight:bold}.role{display:inline-block;min-width:96px;color:#5b6675}
.act{display:inline-block;min-width:56px;text-align:right;margin-right:8px;color:#5b6675}
.pos{color:#1f6f3f}.neg{color:#a3262a}.flex{display:flex;gap:24px;flex-wrap:wrap}
img.plot{max-width:100%;border:1px solid #eef0f3;margin:6px 0}svg{margin:6px 0;max-width:100%;height:auto}
.scroll{overflow-x:auto}
"""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_html_report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    fallback: bool = False,
) -> Path:
    """Render ``run_dir``'s page and write it to ``out`` (default ``run_dir/report.html``),
    atomically; an existing file is replaced only with ``force``.

    With ``fallback`` (what the runners pass: the page must never cost a finished run), a page
    that cannot be rendered is written as a one-paragraph page naming the error and how to
    re-render it, instead of raising."""
    target = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    if target.exists() and not force:
        raise ArtifactError(
            f"output {target} already exists; pass --force to replace it, or choose another --out."
        )
    try:
        page = render_run(run_dir)
    except Exception as exc:  # a rendering bug must not discard the run the page describes
        if not fallback:
            raise
        message = html.escape(f"{type(exc).__name__}: {exc}")
        page = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>report</title></head><body>"
            f"<p>hookunlearn could not render this page ({message}). The run's files are complete; "
            "re-render with <code>hookunlearn report RUN_DIR --force</code> after an update, or report the error.</p>"
            "</body></html>\n"
        )
    with staged_file(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


def render_run(run_dir: str | os.PathLike[str]) -> str:
    """The HTML page of a ``select``, ``build``, ``eval`` or ``demo`` run directory."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise ArtifactError(
            f"run directory {directory} does not exist; give a directory written by select, build, eval or demo."
        )
    manifest = _read_json(directory / "manifest.json", what="run directory")
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{directory / 'manifest.json'}: expected a JSON object.")
    kind = manifest.get("kind")
    if kind == "selection":
        return _selection_page(directory, manifest)
    if kind == "subspace":
        return _subspace_page(directory, manifest)
    if kind == "report":
        report = _read_json(directory / "report.json", what="report directory")
        if isinstance(report, dict) and "rows" in report:
            return _demo_page(directory, manifest, report)
        if isinstance(report, dict) and "evaluated" in report:
            return _eval_page(directory, manifest, report)
        raise ArtifactError(f"{directory / 'report.json'}: neither an eval report nor a demo comparison.")
    raise ArtifactError(
        f"{directory}: a {kind!r} run directory has no HTML report; give a select, build, eval or demo directory."
    )


def _read_json(path: Path, *, what: str) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: {path.name} is missing; give a hookunlearn {what}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error}); re-run the command that wrote it.") from None


def _maybe_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return (
            f"{value:.{digits}g}"
            if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3)
            else f"{value:.{digits}f}"
        )
    return str(value)


def _page(title: str, manifest: Mapping[str, Any], body: Sequence[str]) -> str:
    model = manifest.get("model") or {}
    meta = [
        f"command: <code>{_e(manifest.get('command', '?'))}</code>",
        f"kind: {_e(manifest.get('kind', '?'))}",
        f"created: {_e(manifest.get('created_at', '?'))}",
    ]
    if model.get("spec"):
        meta.append(f"model: <code>{_e(model['spec'])}</code>")
    if manifest.get("hook"):
        meta.append(f"hook: <code>{_e(manifest['hook'])}</code>")
    versions = manifest.get("versions") or {}
    if versions.get("hookunlearn"):
        meta.append(f"hookunlearn {_e(versions['hookunlearn'])}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{_e(title)}</h1>\n"
        f'<p class="meta">{" &middot; ".join(meta)}</p>\n' + "\n".join(body) + "\n</body></html>\n"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, _Raw):
                cells.append(f"<td>{cell.html}</td>")
            elif isinstance(cell, int | float) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{_e(_fmt(cell))}</td>')
            else:
                cells.append(f"<td>{_e(_fmt(cell))}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f'<div class="scroll"><table{klass}><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table></div>'


class _Raw:
    """Cell content that is already HTML."""

    def __init__(self, markup: str) -> None:
        self.html = markup


def _png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


_COLORS = ("#9aa5b1", "#d1495b", "#2e8b57", "#edae49", "#00798c", "#30638e", "#6b4e71", "#8c564b")


def svg_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    width: int = 720,
    height: int = 260,
) -> str:
    """A grouped bar chart as inline SVG (None or NaN: no bar); negative values go below 0."""
    values = [v for vs in series.values() for v in vs if v is not None and not math.isnan(v)]
    top = max([0.0, *values]) or 1.0
    bottom = min([0.0, *values])
    span = (top - bottom) or 1.0
    left, right, upper, lower = 56, 12, 44, 84
    plot_w, plot_h = width - left - right, height - upper - lower
    group = plot_w / max(len(labels), 1)
    bar = group * 0.8 / max(len(series), 1)

    def y(value: float) -> float:
        return upper + (top - value) / span * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{_e(title)}</text>',
        f'<line x1="{left}" y1="{y(0.0):.1f}" x2="{width - right}" y2="{y(0.0):.1f}" stroke="#333"/>',
        f'<line x1="{left}" y1="{upper}" x2="{left}" y2="{upper + plot_h}" stroke="#333"/>',
    ]
    for tick in (bottom, (top + bottom) / 2, top):
        parts.append(
            f'<text x="{left - 4}" y="{y(float(tick)) + 4:.1f}" font-size="10" text-anchor="end">{_e(_fmt(tick, 3))}</text>'
        )
    for s_index, (name, vs) in enumerate(series.items()):
        color = _COLORS[s_index % len(_COLORS)]
        for g_index, value in enumerate(vs):
            if value is None or math.isnan(value):
                continue
            x = left + g_index * group + group * 0.1 + s_index * bar
            y0, y1 = sorted((y(0.0), y(float(value))))
            parts.append(
                f'<rect x="{x:.1f}" y="{y0:.1f}" width="{max(bar - 1, 1):.1f}" height="{max(y1 - y0, 0.5):.1f}" '
                f'fill="{color}"><title>{_e(name)} {_e(labels[g_index])}: {_e(_fmt(value))}</title></rect>'
            )
        legend_x = left + 8 + s_index * 130
        parts.append(f'<rect x="{legend_x}" y="24" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="33" font-size="11">{_e(name)}</text>')
    for g_index, label in enumerate(labels):
        x = left + (g_index + 0.5) * group
        text = label if len(label) <= 26 else label[:25] + "\u2026"
        parts.append(
            f'<text x="{x:.1f}" y="{upper + plot_h + 14}" font-size="10" text-anchor="end" '
            f'transform="rotate(-30 {x:.1f} {upper + plot_h + 14})">{_e(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _token_html(token: str, act: float | None, peak: float, center: bool) -> str:
    shown = token.replace("\n", "\u23ce").replace("\t", "\u21e5") or "\u2205"
    alpha = 0.0 if act is None or peak <= 0 else max(0.0, min(1.0, act / peak))
    style = f' style="background:rgba(255,110,0,{alpha:.2f})"' if alpha > 0 else ""
    title = "not encoded" if act is None else f"{act:.4g}"
    klass = "tok center" if center else "tok"
    return f'<span class="{klass}"{style} title="{_e(title)}">{_e(shown)}</span>'


def latent_card(card: Mapping[str, Any], *, layer: int | str | None = None, extra: str = "") -> str:
    """One latent: score, Neuronpedia link, logit effects and top-activating contexts."""
    latent = card.get("latent")
    heading = f"latent {latent}" + (f" (layer {layer})" if layer is not None else "")
    facts = [f"rank {_e(card.get('rank', '-'))}", f"score {_e(_fmt(card.get('score')))}"]
    if card.get("neuronpedia"):
        facts.append(f'<a href="{_e(card["neuronpedia"])}">Neuronpedia</a>')
    parts = [
        f'<div class="card" id="latent-{_e(layer)}-{_e(latent)}"><h3>{_e(heading)}</h3>',
        f'<p class="meta">{" &middot; ".join(facts)}</p>',
        extra,
    ]
    contexts = card.get("contexts")
    if contexts:
        peak = max(float(c["activation"]) for c in contexts)
        parts.append('<div class="contexts">')
        for ctx in contexts:
            tokens = ctx.get("tokens") or []
            acts = ctx.get("acts") or [None] * len(tokens)
            spans = "".join(
                _token_html(t, a, peak, i == ctx.get("center"))
                for i, (t, a) in enumerate(zip(tokens, acts, strict=False))
            )
            parts.append(
                f'<div class="ctx"><span class="act">{_e(_fmt(float(ctx["activation"]), 3))}</span>'
                f'<span class="role">{_e(ctx.get("role", ""))}#{_e(ctx.get("doc", ""))}</span>{spans}</div>'
            )
        parts.append("</div>")
    elif contexts is not None:
        parts.append('<p class="meta">never fired on the select data.</p>')
    logits = card.get("logits")
    if logits:
        rows = [
            (
                _Raw(f'<span class="pos">{_e(repr(t))}</span>'),
                v,
                _Raw(f'<span class="neg">{_e(repr(b))}</span>'),
                w,
            )
            for (t, v), (b, w) in zip(logits.get("top", []), logits.get("bottom", []), strict=False)
        ]
        parts.append(_table(["promoted token", "logit", "suppressed token", "logit"], rows, cls="logits"))
    parts.append("</div>")
    return "\n".join(parts)


def _cards_by_latent(latents_json: Any, layer: int | str) -> dict[int, dict[str, Any]]:
    if not isinstance(latents_json, dict):
        return {}
    entry = (latents_json.get("layers") or {}).get(str(layer)) or {}
    return {int(card["latent"]): card for card in entry.get("latents", []) if "latent" in card}


def _latents_note(latents_json: Mapping[str, Any], layer: int | str) -> str:
    entry = (latents_json.get("layers") or {}).get(str(layer)) or {}
    window = latents_json.get("window") or {}
    notes = [
        f"top {_e(latents_json.get('top_contexts'))} contexts per latent over the select data, "
        f"{_e(window.get('left'))} tokens before and {_e(window.get('right'))} after; the highlighted "
        "token is where the activation was read, shading is the latent's activation on each token",
        f"logit effects: {_e((latents_json.get('logit_effects') or {}).get('method', ''))}",
    ]
    if entry.get("final_norm"):
        notes.append(f"final norm: {_e(entry['final_norm'])}")
    notes.append(
        f"Neuronpedia: {_e(entry['neuronpedia_id'])}"
        if entry.get("neuronpedia_id")
        else "Neuronpedia: no page for this SAE"
    )
    return '<p class="meta">' + "<br>".join(notes) + "</p>"


def _resolve(spec: str | None, near: Path) -> Path | None:
    """A directory recorded in a manifest: as given (absolute, or from the working directory),
    else beside ``near``."""
    if not spec:
        return None
    path = Path(spec)
    for candidate in (path, near.parent / path, near.parent / path.name):
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


def _selection_page(directory: Path, manifest: Mapping[str, Any]) -> str:
    extra = manifest.get("extra") or {}
    chosen = extra.get("chosen_layer")
    layers = extra.get("layers") or {}
    body = [
        "<h2>Layers</h2>",
        f"<p>objective <b>{_e(extra.get('objective'))}</b>, feature score <b>{_e(extra.get('score'))}</b>, "
        f"chosen layer <b>{_e(chosen)}</b>.</p>",
    ]
    order = sorted(layers, key=int)
    body.append(
        _table(
            ["layer", "hook", "layer score", "tokens / positions per role", ""],
            [
                (
                    int(lay),
                    layers[lay].get("hook"),
                    float(layers[lay].get("layer_score", math.nan)),
                    ", ".join(f"{r}: {n}" for r, n in (layers[lay].get("roles") or {}).items()),
                    "chosen" if str(lay) == str(chosen) else "",
                )
                for lay in order
            ],
        )
    )
    body.append(
        svg_bars(
            [f"layer {lay}" for lay in order],
            {"layer score": [float(layers[lay].get("layer_score", math.nan)) for lay in order]},
            title="layer score (the chosen layer is the highest unless forced)",
            width=max(320, 110 * len(order) + 80),
        )
    )
    if (directory / "scores.png").is_file():
        body.append(_png(directory / "scores.png", "feature-score distribution per layer"))
    features = _maybe_json(directory / "features.json") or []
    latents_json = _maybe_json(directory / "latents.json")
    cards = _cards_by_latent(latents_json, chosen) if chosen is not None else {}
    if features:
        keys = [k for k in features[0] if k not in ("rank", "latent", "score")]
        body.append(f"<h2>Best latents at layer {_e(chosen)}</h2>")
        rows = []
        for row in features[:50]:
            latent = int(row["latent"])
            card = cards.get(latent) or {}
            link = f'<a href="#latent-{_e(chosen)}-{latent}">{latent}</a>' if latent in cards else str(latent)
            top = ", ".join(repr(t) for t, _ in ((card.get("logits") or {}).get("top") or [])[:3])
            rows.append((row["rank"], _Raw(link), row["score"], *[row[k] for k in keys], top or "-"))
        body.append(_table(["rank", "latent", "score", *keys, "top promoted tokens"], rows, cls="features"))
    if cards:
        body.append(f"<h2>What the best latents respond to (layer {_e(chosen)})</h2>")
        body.append(_latents_note(latents_json, chosen))
        for card in list(cards.values())[:CARDS_SHOWN]:
            body.append(latent_card(card, layer=chosen))
    elif latents_json is None:
        body.append('<p class="meta">no latents.json: contexts were not collected (top_contexts=0).</p>')
    return _page("hookunlearn select", manifest, body)


def _subspace_page(directory: Path, manifest: Mapping[str, Any]) -> str:
    extra = manifest.get("extra") or {}
    layer = extra.get("layer")
    rel, irr = extra.get("relevant") or {}, extra.get("irrelevant") or {}
    body = [
        "<h2>Subspaces</h2>",
        _table(
            ["basis", "latents", "kept", "dropped (dependent)"],
            [
                (
                    "relevant (U_rel)",
                    len(rel.get("latents", [])) + len(rel.get("dropped", [])),
                    len(rel.get("latents", [])),
                    ", ".join(map(str, rel.get("dropped", []))) or "-",
                ),
                (
                    "irrelevant (U_irr)",
                    len(irr.get("latents", [])) + len(irr.get("dropped", [])),
                    len(irr.get("latents", [])),
                    ", ".join(map(str, irr.get("dropped", []))) or "-",
                ),
            ],
        ),
        f"<p>layer <b>{_e(layer)}</b>, k <b>{_e(extra.get('k'))}</b>.</p>",
    ]
    diagnostics = extra.get("diagnostics") or {}
    scalar = [(k, v) for k, v in diagnostics.items() if isinstance(v, int | float | str | bool) or v is None]
    if scalar:
        body += ["<h2>Diagnostics</h2>", _table(["diagnostic", "value"], scalar)]
        shares = {
            k: v
            for k, v in diagnostics.items()
            if k.startswith("energy_share_") and isinstance(v, int | float)
        }
        if shares:
            body.append(
                svg_bars(
                    list(shares),
                    {"energy share in span(U_rel)": list(shares.values())},
                    title="energy share of the residual in span(U_rel)",
                    width=420,
                )
            )
    selection_dir = _resolve((manifest.get("inputs") or {}).get("selection"), directory)
    latents_json = _maybe_json(selection_dir / "latents.json") if selection_dir is not None else None
    cards = _cards_by_latent(latents_json, layer) if layer is not None else {}
    ids = list(rel.get("latents", [])) + list(rel.get("dropped", []))
    body.append("<h2>Relevant latents</h2>")
    body.append(f'<p class="meta">{_e(", ".join(map(str, ids)))}</p>')
    if cards:
        body.append(_latents_note(latents_json, layer))
        for latent in ids[:CARDS_SHOWN]:
            if int(latent) in cards:
                body.append(latent_card(cards[int(latent)], layer=layer))
    else:
        body.append(
            '<p class="meta">no contexts: the selection directory or its latents.json was not found.</p>'
        )
    body.append("<h2>Irrelevant latents</h2>")
    body.append(f'<p class="meta">{_e(", ".join(map(str, irr.get("latents", []))))}</p>')
    return _page("hookunlearn build", manifest, body)


def _metrics(side: Any) -> dict[str, dict[str, float]]:
    if not isinstance(side, dict):
        return {}
    return {name: dict(result.get("metrics") or {}) for name, result in (side.get("results") or {}).items()}


def _eval_page(directory: Path, manifest: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    evaluated, base, oracle = (
        _metrics(report.get("evaluated")),
        _metrics(report.get("baseline")),
        _metrics(report.get("oracle")),
    )
    results = (report.get("evaluated") or {}).get("results") or {}
    header = ["suite", "metric", "base", "model", "delta", "oracle", "n"]
    rows = []
    for name, metrics in evaluated.items():
        n = (results.get(name) or {}).get("n") or {}
        for metric, value in metrics.items():
            reference = base.get(name, {}).get(metric)
            delta = (
                value - reference
                if isinstance(reference, int | float) and isinstance(value, int | float)
                else None
            )
            rows.append(
                (name, metric, reference, value, delta, oracle.get(name, {}).get(metric), n.get(metric))
            )
    model = ((report.get("evaluated") or {}).get("model") or {}).get("spec")
    body = [
        f"<p>evaluated <code>{_e(model)}</code>; baseline <code>{_e((report.get('options') or {}).get('baseline'))}</code>; "
        f"oracle <code>{_e((report.get('options') or {}).get('oracle'))}</code>.</p>",
        "<h2>Results</h2>",
        _table(header, rows, cls="results"),
    ]
    body += _latent_activity_section(directory, report)
    plots = sorted((directory / "plots").glob("*.png")) if (directory / "plots").is_dir() else []
    if plots:
        body.append("<h2>Plots</h2>")
        body += [_png(path, path.stem) for path in plots]
    return _page("hookunlearn eval", manifest, body)


def latent_activity(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The selected latents' activity before and after unlearning, read from an eval report's
    JSON: the ``probe`` suite's ``latent_activity[forget|retain]`` on the base (baseline),
    unlearned (evaluated) and oracle models, and the latents it measured."""
    found = None
    for name, result in ((report.get("evaluated") or {}).get("results") or {}).items():
        if result.get("suite") == "probe" and "latents" in (result.get("details") or {}):
            found = (name, result)
            break
    if found is None:
        return None
    name, result = found
    sides = {}
    per_latent = {}
    for label, key in (("base", "baseline"), ("unlearned", "evaluated"), ("oracle", "oracle")):
        other = ((report.get(key) or {}).get("results") or {}).get(name) if report.get(key) else None
        if other:
            metrics = other.get("metrics") or {}
            sides[label] = {side: metrics.get(f"latent_activity[{side}]") for side in ("forget", "retain")}
            if (other.get("details") or {}).get("latent_activity_per_latent"):
                per_latent[label] = other["details"]["latent_activity_per_latent"]
    return {
        "suite": name,
        "hook": result["details"].get("hook"),
        "latents": list(result["details"]["latents"]),
        "activity": sides,
        "per_latent": per_latent,
    }


def _per_latent_rows(activity: Mapping[str, Any], shown: int) -> list[tuple[Any, ...]]:
    """(latent, base / unlearned / oracle activity on the forget side, change, retain-side change),
    the latents most active on the base model first."""
    per = activity.get("per_latent") or {}
    if "unlearned" not in per:
        return []

    def value(label: str, side: str, latent: str) -> float | None:
        found = ((per.get(label) or {}).get(side) or {}).get(latent)
        return float(found) if isinstance(found, int | float) else None

    latents = [str(latent) for latent in activity["latents"]]
    order = sorted(
        latents, key=lambda k: -(value("base", "forget", k) or value("unlearned", "forget", k) or 0.0)
    )
    rows = []
    for latent in order[:shown]:
        base, after, oracle = (value(label, "forget", latent) for label in ("base", "unlearned", "oracle"))
        base_r, after_r = value("base", "retain", latent), value("unlearned", "retain", latent)
        rows.append((
            latent, base, after, oracle,
            after - base if after is not None and base is not None else None,
            after_r - base_r if after_r is not None and base_r is not None else None,
        ))  # fmt: skip
    return rows


def _latent_activity_section(directory: Path, report: Mapping[str, Any]) -> list[str]:
    activity = latent_activity(report)
    if activity is None:
        return [
            "<h2>Selected latents</h2>",
            '<p class="meta">no latent activity in this report (run eval with the probe suite and --subspace).</p>',
        ]
    sides = activity["activity"]
    table_rows = [(label, v.get("forget"), v.get("retain")) for label, v in sides.items()]
    if "base" in sides and "unlearned" in sides:
        change = [
            after - before if isinstance(after, int | float) and isinstance(before, int | float) else None
            for before, after in (
                (sides["base"].get(side), sides["unlearned"].get(side)) for side in ("forget", "retain")
            )
        ]
        table_rows.append(("change (unlearned - base)", *change))
    labels = ["forget side", "retain side"]
    series = {label: [values.get("forget"), values.get("retain")] for label, values in sides.items()}
    body = [
        "<h2>Selected latents: activity before and after unlearning</h2>",
        f'<p class="meta">mean activation of the subspace\'s {len(activity["latents"])} relevant latents at '
        f"<code>{_e(activity['hook'])}</code> (suite {_e(activity['suite'])}: forget side = target prompts or its "
        "forget_data, retain side = known prompts or its retain_data).</p>",
        _table(["model", "forget side", "retain side"], table_rows),
        svg_bars(labels, series, title="selected-latent activity", width=460),
    ]
    latent_rows = _per_latent_rows(activity, CARDS_SHOWN)
    if latent_rows:
        body += [
            "<h3>Each latent</h3>",
            '<p class="meta">each latent\'s mean activation on the forget side, most active on the base model '
            "first, and the change of its mean on the retain side.</p>",
            _table(
                ["latent", "base", "unlearned", "oracle", "change (forget)", "change (retain)"], latent_rows
            ),
        ]
    subspace_dir = _resolve((report.get("options") or {}).get("subspace"), directory)
    selection_dir = None
    layer = None
    if subspace_dir is not None:
        sub_manifest = _maybe_json(subspace_dir / "manifest.json") or {}
        layer = (sub_manifest.get("extra") or {}).get("layer")
        selection_dir = _resolve((sub_manifest.get("inputs") or {}).get("selection"), subspace_dir)
    latents_json = _maybe_json(selection_dir / "latents.json") if selection_dir is not None else None
    cards = _cards_by_latent(latents_json, layer) if layer is not None else {}
    body.append(f"<p>latents: {_e(', '.join(map(str, activity['latents'])))}</p>")
    if cards:
        body.append(_latents_note(latents_json, layer))
        for latent in activity["latents"][:CARDS_SHOWN]:
            if int(latent) in cards:
                body.append(latent_card(cards[int(latent)], layer=layer))
    return body


_DEMO_COLUMNS = (
    "hazard_mc",
    "benign_mc",
    "qa_forget",
    "qa_retain",
    "qa_unknown",
    "probe_targets_unknown",
    "mia_auc_worst",
    "decodable",
    "worst_attack_hazard_mc",
    "worst_attack_qa_forget",
)


def _demo_page(directory: Path, manifest: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    rows = [row for row in report.get("rows") or [] if isinstance(row, dict)]
    columns = [c for c in _DEMO_COLUMNS if any(c in row for row in rows)]
    body = [
        f"<p>topic layer {_e(report.get('topic_layer'))}, entity layer {_e(report.get('entity_layer'))}, "
        f"k {_e(report.get('k'))}, attack grid {_e(report.get('attack_grid'))}.</p>",
        "<h2>Comparison</h2>",
        _table(
            ["method", *columns, "seconds"],
            [(row.get("method"), *[row.get(c) for c in columns], row.get("seconds")) for row in rows],
            cls="results",
        ),
    ]
    chart = [c for c in ("hazard_mc", "benign_mc", "qa_forget", "qa_retain") if c in columns]
    if chart and rows:
        body.append(
            svg_bars(
                chart,
                {
                    str(row.get("method")): [
                        row.get(c) if isinstance(row.get(c), int | float) else None for c in chart
                    ]
                    for row in rows
                },
                title="forget (hazard_mc, qa_forget) and keep (benign_mc, qa_retain) per method",
                width=min(960, max(520, 60 * len(rows) * len(chart) + 120)),
            )
        )
    if (directory / "report.md").is_file():
        body.append(
            "<h2>Legend</h2><pre>"
            + _e((directory / "report.md").read_text(encoding="utf-8").split("\n\n", 1)[-1])
            + "</pre>"
        )
    return _page("hookunlearn demo", manifest, body)


__all__ = [
    "CARDS_SHOWN",
    "REPORT_NAME",
    "latent_activity",
    "latent_card",
    "render_run",
    "svg_bars",
    "write_html_report",
]
