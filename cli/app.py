"""The `hookunlearn` command line: a thin Typer app over the library.

Start-up stays fast: this module imports no torch, TransformerLens or SAELens; each command
imports the library code it needs inside its body. Errors caused by user input
(`HookunlearnError`) are printed as one clear message and exit with code 2, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from hookunlearn.cli.config import ConfigurableCommand
from typer.core import TyperGroup

from hookunlearn._version import __version__

EXIT_USER_ERROR = 2

EPILOG = """\b
Examples:
  hookunlearn world info                               the embedded world and what its model knows
  hookunlearn select --objective topic --out sel/      which layer and latents carry the topic
  hookunlearn build sel/ --k 32 --out sub/             subspaces and centroids from a selection
  hookunlearn unlearn sub/ --method sspu --out model/  edit the weights, write an HF checkpoint
  hookunlearn eval model/ --baseline world             did it forget, what did it keep
  hookunlearn export run/ --out hf/                    HookedTransformer -> transformers checkpoint
  hookunlearn demo                                     the whole flow on the embedded world
  hookunlearn recipes                                  named presets: hookunlearn unlearn --recipe NAME
"""


class _Root(TyperGroup):
    """The root command: a usage error (missing option, wrong type, an extra argument) is one
    ``error:`` line first on stderr, like every other error, then where to find the usage."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # typer's (vendored) click errors: usage, bad values
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]  # the command's help, as before
                sys.exit(exc.exit_code)
            message = " ".join(exc.format_message().split()).rstrip(".") + "."
            ctx = getattr(exc, "ctx", None)
            where = f" See '{ctx.command_path} --help'." if ctx is not None else ""
            typer.echo(f"error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="hookunlearn",
    cls=_Root,
    help="Make a language model forget chosen knowledge by editing its internal activations, "
    "with sparse autoencoders showing where that knowledge lives.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
world_app = typer.Typer(
    help="The embedded fictitious world: data, model and SAEs shipped with hookunlearn.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(world_app, name="world", short_help="The embedded world: data, model and SAEs; build and info.")


_BACKEND_HELP = (
    "Model class: hooked (HookedTransformer) or bridge (TransformerBridge, TransformerLens 4's path)."
)
_N_DEVICES_HELP = (
    "hooked backend: spread the blocks over this many CUDA devices from --device on "
    "(TransformerLens's split; see docs/performance.md)."
)
_DEVICE_MAP_HELP = (
    "bridge backend: transformers' device_map (auto, balanced, balanced_low_0, sequential, or a JSON "
    "file of module -> device); leave --device at auto."
)


def _method_names() -> tuple[str, ...]:
    """The registered methods and interventions (their registries import no torch)."""
    from hookunlearn.interventions import INTERVENTIONS
    from hookunlearn.objectives import METHODS

    return (*METHODS, *INTERVENTIONS)


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


EXIT_INTERRUPTED = 130


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a `HookunlearnError` into a one-line message and exit code 2 (no traceback); Ctrl-C
    into one line and exit code 130 (an error that says where a checkpoint was saved keeps its
    ``exit_code``)."""
    import warnings

    from hookunlearn.errors import HookunlearnError, HookunlearnWarning

    try:
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def show(message: object, category: type[Warning], *args: object, **kwargs: object) -> None:
                if issubclass(category, HookunlearnWarning):
                    typer.echo(f"warning: {message}", err=True)
                else:
                    shown(message, category, *args, **kwargs)  # type: ignore[arg-type]

            warnings.showwarning = show
            yield
    except HookunlearnError as exc:
        _err(str(exc))
        raise typer.Exit(code=getattr(exc, "exit_code", EXIT_USER_ERROR)) from None
    except KeyboardInterrupt:
        _err("interrupted (Ctrl-C); no output was written (a command's output appears only when complete).")
        raise typer.Exit(code=EXIT_INTERRUPTED) from None


def _version_callback(value: bool | None) -> bool | None:
    if value:
        typer.echo(f"hookunlearn {__version__}")
        raise typer.Exit()
    return value


@app.callback()
def _root(
    version: bool | None = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version_callback, is_eager=True
    ),
) -> None:
    """Make a language model forget chosen knowledge by editing its internal activations."""


@app.command(cls=ConfigurableCommand, short_help="Find the layer and SAE latents that carry the knowledge.")
def select(
    out: str = typer.Option(..., help="Output directory of the selection."),
    model: str = typer.Option(
        "world", help="Model spec: 'world', a local HF checkpoint dir, or a TransformerLens name."
    ),
    objective: str = typer.Option(
        "topic", help="'topic' (forget vs retain corpus) or 'entity' (known vs unknown entities)."
    ),
    sae: list[str] = typer.Option(
        [], "--sae", help="SAE spec per candidate layer (world:L, release:id, dir); repeatable."
    ),
    layers: str = typer.Option(
        "auto", help="'auto' (the world's SAEs, or every --sae) or a comma list of world layers."
    ),
    layer: int | None = typer.Option(None, help="Force this layer instead of choosing the best one."),
    forget: str = typer.Option(
        "world:forget_corpus", help="topic: forget corpus (file, hub id, world:NAME)."
    ),
    retain: str = typer.Option("world:retain_corpus", help="topic: retain corpus."),
    text_column: str = typer.Option("text", help="Column holding the text in the corpora."),
    entities: str = typer.Option(
        "world:entity_prompts", help="entity: prompts with prompt, set, entity_end_char|entity[, fold]."
    ),
    template: str | None = typer.Option(
        "bare", help="entity: keep rows with this 'template' value (when the column exists)."
    ),
    generic: str | None = typer.Option(
        None, help="entity: generic text; latents firing on >= --max-generic-rate of it are dropped."
    ),
    max_generic_rate: float = typer.Option(0.02, help="entity: the generic-text firing filter's threshold."),
    score: str | None = typer.Option(
        None, help="topic: mean_diff (default), freq_diff or ratio; entity: ferrando."
    ),
    top_n: int | None = typer.Option(
        None, min=1, help="Latents averaged in the layer score (default 10 topic, 1 entity)."
    ),
    batch_size: int = typer.Option(32, min=1, help="Texts per forward pass."),
    max_tokens: int | None = typer.Option(None, min=2, help="Truncate each document to this many tokens."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    processing: str = typer.Option("none", help="Weight processing of the model (must match the SAEs')."),
    top_contexts: int = typer.Option(
        8, min=0, help="Top-activating contexts kept per latent for latents.json and report.html (0: none)."
    ),
    second_moments: bool = typer.Option(
        True,
        "--second-moments/--no-second-moments",
        help="Also accumulate the residual stream's d_model x d_model second moment (only build's "
        "energy-share diagnostics read it; no score does).",
    ),
    backend: str = typer.Option("hooked", help=_BACKEND_HELP),
    n_devices: int = typer.Option(1, "--n-devices", min=1, help=_N_DEVICES_HELP),
    device_map: str | None = typer.Option(None, "--device-map", help=_DEVICE_MAP_HELP),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Find which layer and which SAE latents carry the knowledge to forget.

    \b
    Example: hookunlearn select --objective topic --layers auto --out sel/
    """
    with user_errors():
        from hookunlearn.backends import check_backend

        if backend is not None:
            check_backend(backend)  # torch-free: a wrong name fails before any import
        from hookunlearn.artifacts import check_can_write

        check_can_write(out, force=force)
        from hookunlearn.pipeline.select import SelectConfig, check_objective

        check_objective(objective)
        from hookunlearn.pipeline.select import select as run_select

        config = SelectConfig(
            out=out,
            model=model,
            objective=objective,  # type: ignore[arg-type]
            saes=tuple(sae),
            layers=None if layers == "auto" else tuple(_parse_layers(layers)),
            layer=layer,
            forget=forget,
            retain=retain,
            text_column=text_column,
            entities=entities,
            template=template,
            generic=generic,
            max_generic_rate=max_generic_rate,
            score=score,
            top_n=top_n,
            batch_size=batch_size,
            max_tokens=max_tokens,
            device=device,
            dtype=dtype,
            processing=processing,
            top_contexts=top_contexts,
            second_moments=second_moments,
            force=force,
            backend=backend,
            n_devices=n_devices,
            device_map=device_map,
        )
        with _select_progress() as progress:
            result = run_select(config, progress=progress)
        selection = result.selection
        rows = [
            (str(lay), f"{ls.layer_score:.4f}", "<- chosen" if lay == selection.chosen_layer else "")
            for lay, ls in sorted(selection.layers.items())
        ]
        _print_table(["layer", "layer score", ""], rows)
        roles = [r for r in selection.chosen.roles if ":" not in r and r != "generic"]
        _print_table(
            ["rank", "latent", "score", *[f"freq[{r}]" for r in roles]],
            [
                (
                    str(r["rank"]),
                    str(r["latent"]),
                    f"{r['score']:.4f}",
                    *[f"{r[f'freq[{x}]']:.3f}" for x in roles],
                )
                for r in selection.feature_table(n=10)
            ],
        )
        heldout = selection.heldout_scores()
        if heldout:
            typer.echo(
                f"best latent {heldout['latent']}: known-vs-unknown score {heldout['select_score']:.3f} "
                f"(select entities), {heldout['heldout_score']:.3f} (held-out entities)"
            )
        cut = {
            role: info["truncated_texts"]
            for role, info in selection.data.items()
            if info.get("truncated_texts")
        }
        if cut:
            typer.echo(
                "truncated to the token limit (--max-tokens or the model's context): "
                + ", ".join(f"{n} {role} text(s)" for role, n in cut.items())
            )
        written = "manifest.json, tensors.safetensors, features.json, scores.png"
        written += ", latents.json, report.html" if selection.latents is not None else ", report.html"
        typer.echo(f"wrote {out} ({written})")


@contextmanager
def _select_progress() -> Iterator[Callable[[dict], None]]:
    """A tqdm bar per role of the selection's progress records."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(info: dict) -> None:
        role = info["role"]
        if role not in bars:
            for previous in bars.values():
                previous.close()
            unit = "tok" if "tokens" in info else "prompt"
            bars[role] = tqdm(total=info.get("total"), unit=unit, unit_scale=True, desc=f"select [{role}]")
        bars[role].n = info.get("tokens", info["docs"])
        bars[role].refresh()

    try:
        yield progress
    finally:
        for open_bar in bars.values():
            open_bar.close()


def _parse_layers(text: str) -> list[int]:
    from hookunlearn.errors import HookunlearnError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HookunlearnError(
            f"--layers {text!r}: use 'auto' or a comma list of integers like '1,2'."
        ) from None


@app.command(cls=ConfigurableCommand, short_help="Build subspaces and centroids from a selection.")
def build(
    selection_dir: str = typer.Argument(..., help="A directory written by `hookunlearn select`."),
    out: str = typer.Option(..., help="Output directory of the subspace."),
    k: int = typer.Option(32, min=1, help="Latents per subspace (relevant and irrelevant; world sweep: 32)."),
    layer: int | None = typer.Option(None, help="Build at this layer instead of the selection's chosen one."),
    sae: str | None = typer.Option(
        None, help="SAE spec for that layer (default: the one the selection used)."
    ),
    model: str | None = typer.Option(None, help="Check against this model spec (default: the selection's)."),
    min_retain_rate: float = typer.Option(
        1e-3, help="Irrelevant latents must fire at least this often on the retain side."
    ),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP + " Default: the selection's, else hooked."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Build relevant/irrelevant subspaces and known/unknown centroids from a selection.

    \b
    Example: hookunlearn build sel/ --k 32 --out sub/
    """
    with user_errors():
        from hookunlearn.backends import check_backend

        if backend is not None:
            check_backend(backend)  # torch-free: a wrong name fails before any import
        from hookunlearn.artifacts import check_can_write

        check_can_write(out, force=force)
        from hookunlearn.pipeline.build import BuildConfig
        from hookunlearn.pipeline.build import build as run_build

        result = run_build(
            BuildConfig(
                selection=selection_dir,
                out=out,
                k=k,
                layer=layer,
                sae=sae,
                model=model,
                min_retain_rate=min_retain_rate,
                force=force,
                backend=backend,
            )
        )
        diagnostics = result.subspace.diagnostics
        rows = [(key, _fmt(value)) for key, value in diagnostics.items() if key != "principal_angles_deg"]
        angles = sorted(diagnostics["principal_angles_deg"])
        if angles:
            rows.append(
                (
                    "principal angles (deg) min/median/max",
                    f"{angles[0]:.1f} / {angles[len(angles) // 2]:.1f} / {angles[-1]:.1f}",
                )
            )
        _print_table(["diagnostic", "value"], rows)
        typer.echo(f"wrote {out} (manifest.json, tensors.safetensors: U_rel, U_irr, centroids)")


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@app.command(cls=ConfigurableCommand, short_help="Edit the weights with an unlearning method; export to HF.")
def unlearn(
    subspace_dir: str | None = typer.Argument(
        None, help="A `hookunlearn build` directory (needed by sspu, align, clamp)."
    ),
    out: str = typer.Option(..., help="Output run directory (with the exported checkpoint in model/)."),
    method: str = typer.Option("sspu", help=f"A method: {', '.join(_method_names())}."),
    model: str | None = typer.Option(None, help="Model spec (default: the subspace's model, else 'world')."),
    layer: int | None = typer.Option(None, help="Hooked layer (default: the subspace's)."),
    forget: str | None = typer.Option(
        None,
        help="Forget corpus; required except on the world model, where it defaults to "
        "world:forget_corpus (align: world:forget_entities_corpus, texts about the target people).",
    ),
    retain: str | None = typer.Option(
        None,
        help="Retain corpus; required except on the world model, where it defaults to "
        "world:retain_corpus (align: world:retain_entities_corpus, preserved).",
    ),
    text_column: str = typer.Option("text", help="Text column of the corpora."),
    entities: str | None = typer.Option(
        None,
        help="align: also entity prompts (set target: their name tokens join the forget side; "
        "set known: preserved), e.g. world:entity_prompts.",
    ),
    template: str | None = typer.Option(
        "bare", help="align: keep --entities rows with this template (when the column exists)."
    ),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="Method option KEY=VALUE (e.g. -o steering_coeff=50); repeatable."
    ),
    stage: list[str] = typer.Option(
        [],
        "--stage",
        help="A robustness stage NAME[:KEY=VALUE,...]: sam, lat, cir (change the method's run) or "
        "distill (after it); repeatable, e.g. --stage lat:eps=4 --stage distill:alpha=0.5.",
    ),
    steps: int = typer.Option(300, min=1, help="Optimiser steps."),
    lr: float = typer.Option(
        5e-3, help="AdamW learning rate (tuned on the world model; ~5e-5 for billion-parameter models)."
    ),
    batch_size: int = typer.Option(16, min=1, help="Sequences per step on each side."),
    trainable_layers: str | None = typer.Option(
        None, help="Comma list of trainable blocks (default l-2..l)."
    ),
    trainable: str = typer.Option("mlp.W_out", help="Comma list of parameter names per block."),
    schedule: str = typer.Option("constant", help="constant, cosine or linear."),
    warmup_steps: int = typer.Option(0, min=0, help="Linear warm-up steps."),
    grad_clip: float | None = typer.Option(1.0, help="Global gradient-norm clip (omit with 0)."),
    grad_accum: int = typer.Option(1, min=1, help="Micro-batches per step."),
    seed: int = typer.Option(0, help="Seeds batch order and random vectors."),
    max_tokens: int | None = typer.Option(None, min=2, help="Truncate documents to this many tokens."),
    checkpoint_every: int = typer.Option(0, min=0, help="Write a resumable checkpoint every N steps."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run from its last checkpoint."
    ),
    export: bool = typer.Option(
        True, "--export/--no-export", help="Write and verify the HF checkpoint in OUT/model."
    ),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP + " Default: the subspace's, else hooked."),
    n_devices: int = typer.Option(1, "--n-devices", min=1, help=_N_DEVICES_HELP),
    device_map: str | None = typer.Option(None, "--device-map", help=_DEVICE_MAP_HELP),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Run an unlearning method (or an inference-time intervention) and export the model.

    \b
    Example: hookunlearn unlearn sub/ --method sspu --out model/ -o steering_coeff=50
    """
    with user_errors():
        from hookunlearn.backends import check_backend

        if backend is not None:
            check_backend(backend)  # torch-free: a wrong name fails before any import
        from hookunlearn.errors import HookunlearnError

        if method not in _method_names():
            raise HookunlearnError(f"--method {method!r}: choose one of {', '.join(_method_names())}.")
        from hookunlearn.artifacts import check_can_write

        check_can_write(out, force=force)
        from tqdm import tqdm

        from hookunlearn.interventions import INTERVENTIONS
        from hookunlearn.options import parse_option
        from hookunlearn.pipeline.unlearn import UnlearnConfig
        from hookunlearn.pipeline.unlearn import unlearn as run_unlearn
        from hookunlearn.train import SCHEDULES, TrainConfig

        if schedule not in SCHEDULES:  # before the typed config: a clear error, not a type error
            raise HookunlearnError(f"--schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}.")
        config = UnlearnConfig(
            out=out,
            method=method,
            subspace=subspace_dir,
            model=model,
            layer=layer,
            forget=forget,
            retain=retain,
            text_column=text_column,
            entities=entities,
            template=template,
            options=dict(parse_option(text) for text in option),
            train=TrainConfig(
                steps=steps,
                lr=lr,
                batch_size=batch_size,
                schedule=schedule,  # type: ignore[arg-type]
                warmup_steps=warmup_steps,
                grad_clip=grad_clip or None,
                grad_accum=grad_accum,
                seed=seed,
                checkpoint_every=checkpoint_every,
                trainable=tuple(x.strip() for x in trainable.split(",") if x.strip()),
                trainable_layers=tuple(_parse_layers(trainable_layers)) if trainable_layers else None,
            ),
            stages=tuple(stage),
            max_tokens=max_tokens,
            resume=resume,
            export=export,
            device=device,
            dtype=dtype,
            force=force,
            backend=backend,
            n_devices=n_devices,
            device_map=device_map,
        )
        bars: list[tqdm] = []  # made at the first step, so an error before training is stderr's first line

        def bar_update(record: dict) -> None:
            if not bars:
                bars.append(
                    tqdm(
                        total=steps, unit="step", desc=f"unlearn [{method}]", disable=method in INTERVENTIONS
                    )
                )
            bar = bars[0]
            bar.n = record["step"]
            skip = ("step", "lr", "elapsed_s", "total")
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in skip}, refresh=False)
            bar.refresh()

        try:
            run = run_unlearn(config, progress=bar_update)
        finally:
            for bar in bars:
                bar.close()
        if run.kind == "intervention":
            typer.echo(
                f"wrote intervention {out}: {method} {len(run.intervention.latents)} latents at "
                f"{run.intervention.hook} (evaluate it with `hookunlearn eval MODEL --intervention {out}`; "
                "it cannot be exported: it edits no weight)"
            )
            return
        _print_table(
            ["parameter", "relative change"], [(name, f"{value:.4f}") for name, value in run.changed.items()]
        )
        cut = {side: n for side, n in run.truncated.items() if n}
        if cut:
            typer.echo(
                "truncated to the token limit (--max-tokens or the model's context): "
                + ", ".join(f"{n} {side} text(s)" for side, n in cut.items())
            )
        typer.echo(
            f"wrote {out} ({'model/ = verified HF checkpoint, ' if run.exported else ''}train_log.jsonl, manifest.json)"
        )


@app.command(
    "eval", cls=ConfigurableCommand, short_help="Did it forget, what did it keep, does it hold under attack."
)
def eval_(
    model: str = typer.Argument(
        "world",
        help="Model spec: 'world', a local HF checkpoint dir (e.g. RUN/model), or a TransformerLens name.",
    ),
    baseline: str | None = typer.Option(
        None,
        help="Base model spec to compare with, or an earlier `eval --out` directory (its results are reused).",
    ),
    oracle: str = typer.Option(
        "auto",
        help="The model that never saw the forget set (a model spec, or an earlier `eval --out` of it), "
        "'none', or 'auto': world:oracle when the model is the world's or an unlearn export of it.",
    ),
    suite: list[str] = typer.Option(
        [],
        "--suite",
        "-s",
        help="Suite NAME or NAME:key=value,...; repeatable. `hookunlearn eval --list-suites` lists them.",
    ),
    mc: list[str] = typer.Option(
        [], "--mc", help="Shortcut for --suite mc:data=SPEC (cais/wmdp schema); repeatable."
    ),
    qa: list[str] = typer.Option(
        [], "--qa", help="Shortcut for --suite qa:data=SPEC (prompt, answer, entity, split); repeatable."
    ),
    protocol: str = typer.Option(
        "continuation", help="--mc protocol: 'letter' (lm-eval's A-D) or 'continuation'."
    ),
    length_normalized: bool = typer.Option(
        False, "--length-normalized", help="--mc continuation: divide by choice length (acc_norm)."
    ),
    description: str = typer.Option(
        "auto", help="--mc letter protocol: description line topic ('auto', 'none' or a topic word)."
    ),
    subspace: str | None = typer.Option(
        None, help="A `hookunlearn build` directory: the probe suite's hook, centroids and latents."
    ),
    limit: int | None = typer.Option(
        None, min=1, help="At most N items per suite (suites whose spec sets no limit)."
    ),
    seed: int | None = typer.Option(
        None,
        help="The seed of every suite that has one and whose --suite spec does not set it "
        "(subset shuffling, few-shot examples, relearning split); default: each suite's own.",
    ),
    out: str | None = typer.Option(
        None, help="Write report.json, report.md, plots/ and manifest.json into this directory."
    ),
    backend: str = typer.Option("hooked", help=_BACKEND_HELP),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    n_devices: int = typer.Option(1, "--n-devices", min=1, help=_N_DEVICES_HELP),
    device_map: str | None = typer.Option(None, "--device-map", help=_DEVICE_MAP_HELP),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    batch_size: int = typer.Option(32, min=1, help="Sequences per forward pass."),
    intervention: str | None = typer.Option(
        None, help="Apply a clamp intervention directory (to the evaluated model) through hooks."
    ),
    log_samples: bool = typer.Option(
        False,
        "--log-samples",
        help="Also write one JSON record per item (prompt, choices, scores, prediction, target, correct) "
        "to OUT/samples/<role>/<suite>.jsonl, to diff two runs item by item; needs --out.",
    ),
    list_suites: bool = typer.Option(
        False, "--list-suites", help="List the suites and their options, then exit."
    ),
) -> None:
    """Measure forgetting, retained knowledge and robustness to attacks.

    With no suites and the world model, runs the world's hazard and benign MC, entity QA and
    retain perplexity. With --baseline, every metric is shown as base, unlearned and delta; with an
    oracle (the world's by default), also as the oracle's value and the gap to it.

    \b
    Examples:
      hookunlearn eval run/model --baseline world --suite jailbreak --suite relearn --out report/
      hookunlearn eval run/model --baseline report-base/ --suite wmdp:subset=wmdp-cyber --suite mmlu
    """
    with user_errors():
        from hookunlearn.backends import check_backend

        if backend is not None:
            check_backend(backend)  # torch-free: a wrong name fails before any import
        if list_suites:
            _echo_suites()
            return
        from hookunlearn.errors import HookunlearnError

        if protocol not in ("letter", "continuation"):
            raise HookunlearnError(f"--protocol {protocol!r}: choose 'letter' or 'continuation'.")
        if log_samples and out is None:
            raise HookunlearnError(
                "--log-samples writes per-item files into the run directory, and no --out was given; "
                "pass --out DIR (or leave out --log-samples)."
            )
        if out is not None:
            from hookunlearn.artifacts import check_can_write

            check_can_write(out, force=force)
        from hookunlearn.pipeline.eval import EvalConfig, evaluate

        run = evaluate(
            EvalConfig(
                model=model,
                baseline=baseline,
                oracle=oracle,
                suites=tuple(suite),
                mc=tuple(mc),
                qa=tuple(qa),
                protocol=protocol,  # type: ignore[arg-type]
                length_normalized=length_normalized,
                description=description,
                subspace=subspace,
                limit=limit,
                seed=seed,
                out=out,
                force=force,
                backend=backend,
                device=device,
                n_devices=n_devices,
                device_map=device_map,
                dtype=dtype,
                batch_size=batch_size,
                intervention=intervention,
                log_samples=log_samples,
            ),
            progress=lambda m: typer.echo(m, err=True),
        )
        with_oracle = run.report.oracle is not None
        header = [
            "suite",
            "metric",
            "base",
            "value",
            "delta",
            *(["oracle", "gap"] if with_oracle else []),
            "n",
        ]

        def number(value: float | None, signed: bool = False) -> str:
            return "" if value is None else f"{value:+.3f}" if signed else f"{value:.3f}"

        _print_table(
            header,
            [
                (
                    r["suite"],
                    r["metric"],
                    number(r["base"]),
                    number(r["value"]),
                    number(r["delta"], signed=True),
                    *((number(r["oracle"]), number(r["gap"], signed=True)) if with_oracle else ()),
                    str(r["n"]),
                )
                for r in run.report.table()
            ],
        )
        if out is not None:
            written = (
                "report.json, report.md, plots/ and samples/"
                if log_samples
                else "report.json, report.md and plots/"
            )
            typer.echo(f"wrote {out}/{written}")


def _echo_suites() -> None:
    import dataclasses

    from hookunlearn.evaluation.suites import get_suite, suite_names

    for name in suite_names():
        cls = get_suite(name)
        typer.echo(f"{name}: {cls.summary}")
        for f in dataclasses.fields(cls.Config):
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            typer.echo(f"    {f.name} = {default!r}")


def _print_table(header: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    typer.echo(line)
    typer.echo("  ".join("-" * w for w in widths))
    for row in rows:
        typer.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


@app.command(cls=ConfigurableCommand, short_help="Write a verified transformers checkpoint.")
def export(
    source: str = typer.Argument(
        ..., help="A model spec (local HF dir, 'world', a TL name) or an `unlearn` run directory."
    ),
    out: str = typer.Option(..., help="Output directory of the transformers checkpoint."),
    processing: str = typer.Option("none", help="Weight processing to load the model with before exporting."),
    tolerance: float | None = typer.Option(
        None, help="Max log-prob difference allowed by the verification (fp32: 1e-4)."
    ),
    bos: str = typer.Option(
        "auto",
        help="Whether the written tokenizer prepends BOS with its defaults: auto (when hookunlearn feeds "
        "the model one), add, or keep (the tokenizer as it is).",
    ),
    report: str | None = typer.Option(
        None, help="An eval report (report.json or its directory) whose numbers the model card lists."
    ),
    backend: str = typer.Option("hooked", help=_BACKEND_HELP),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Write a HookedTransformer as a transformers checkpoint, verified by reloading it.

    The directory loads with transformers 4.45+ and 5, lm-evaluation-harness and vLLM with their
    defaults; it carries a model card (README.md) and the export record (hookunlearn.json).

    \b
    Example: hookunlearn export run/ --out hf/ --report run-eval/
    """
    with user_errors():
        from hookunlearn.backends import check_backend

        if backend is not None:
            check_backend(backend)  # torch-free: a wrong name fails before any import
        from hookunlearn.artifacts import check_can_write

        check_can_write(out, force=force)
        from hookunlearn.pipeline.export import BOS_CHOICES, ExportConfig
        from hookunlearn.pipeline.export import export as run_export

        if bos not in BOS_CHOICES:  # before the typed config: a clear error, not a type error
            from hookunlearn.errors import HookunlearnError

            raise HookunlearnError(f"--bos {bos!r}: choose one of {', '.join(BOS_CHOICES)}.")

        result = run_export(
            ExportConfig(
                source=source,
                out=out,
                processing=processing,
                tolerance=tolerance,
                force=force,
                backend=backend,
                bos=bos,  # type: ignore[arg-type]  # checked by ExportConfig
                report=report,
            )
        )
        typer.echo(
            f"wrote {out}: verified, max log-prob difference {result.max_logprob_diff:.2e} (tolerance {result.tolerance:.0e})"
        )


@app.command(cls=ConfigurableCommand, short_help="The whole flow on the embedded world, one table.")
def demo(
    out: str = typer.Option("demo-report", help="Directory for report.json, report.md and manifest.json."),
    methods: str = typer.Option(
        "sspu,rmu,ga,align,sspu+distill,base+distill",
        help="Comma list of methods or pipelines (sspu+lat, align+distill, base+distill); "
        "separate with ';' when stage options contain commas.",
    ),
    steps: int = typer.Option(300, min=1, help="Optimiser steps per method (the same budget for all)."),
    k: int = typer.Option(32, min=1, help="Latents per subspace (`build --k`)."),
    world: str | None = typer.Option(
        None, help="A world directory (default: $HOOKUNLEARN_WORLD or the shipped one)."
    ),
    attack_grid: str = typer.Option(
        "full",
        help="The relearning grid: 'full' (every learning rate and step count) or 'small' (one of each).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Run select -> build -> unlearn -> eval on the embedded world and print a comparison.

    \b
    Example: hookunlearn demo
    """
    with user_errors():
        from hookunlearn.artifacts import check_can_write

        check_can_write(out, force=force)
        from hookunlearn.pipeline.demo import DemoConfig
        from hookunlearn.pipeline.demo import demo as run_demo

        result = run_demo(
            DemoConfig(
                out=out,
                methods=tuple(m.strip() for m in methods.split(";" if ";" in methods else ",") if m.strip()),
                steps=steps,
                k=k,
                world=world,
                attack_grid=attack_grid,
                force=force,
            ),
            progress=lambda m: typer.echo(m, err=True),
        )
        typer.echo(result.table)
        summary = result.result
        typer.echo(
            f"topic layer {summary['topic_layer']}, entity layer {summary['entity_layer']}, k {summary['k']}; "
            f"every method: {steps} steps, lr {summary['train']['lr']}, batch {summary['train']['batch_size']}."
        )
        typer.echo(f"wrote {out}/report.md and report.json")


@app.command(short_help="List the recipes (named presets for --recipe), or show one.")
def recipes(
    name: str | None = typer.Argument(None, help="A recipe to show in full (its TOML)."),
) -> None:
    """Named, versioned presets: every command's options for one model, SAE and dataset, with the
    source of every number. Use one with `--recipe NAME` on any command; flags override it.

    \b
    Example: hookunlearn recipes sspu-world
    """
    with user_errors():
        from hookunlearn.recipes import load_recipe, recipe_names

        if name is not None:
            recipe = load_recipe(name)
            if recipe.path is not None:
                typer.echo(recipe.path.read_text(encoding="utf-8"))
            return
        for known in recipe_names():
            recipe = load_recipe(known)
            summary = " ".join(recipe.description.split())
            typer.echo(f"{known} (v{recipe.version}): {summary[:160]}{'...' if len(summary) > 160 else ''}")
            typer.echo(f"    commands: {', '.join(sorted(recipe.commands))}")


@world_app.command(
    cls=ConfigurableCommand, name="build", short_help="Regenerate data, tokenizer, model and SAEs."
)
def world_build(
    out: str = typer.Option("world", help="Output directory of the world."),
    seed: int = typer.Option(0, help="World seed: the same seed gives the same data and model."),
    quick: bool = typer.Option(False, "--quick", help="A tiny world in under a minute (for tests)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Regenerate the world: data, tokenizer, model and SAEs, reproducibly.

    \b
    Example: hookunlearn world build --seed 0 --out my-world/ --quick
    """
    with user_errors():
        from hookunlearn.artifacts import check_can_write

        check_can_write(out, force=force)
        from tqdm import tqdm

        from hookunlearn.world.build import WorldBuildConfig, build_world

        config = WorldBuildConfig.quick(seed) if quick else WorldBuildConfig.default(seed)
        bar = tqdm(total=config.lm.max_tokens, unit="tok", unit_scale=True, desc="language model", leave=True)
        bars: dict[str, tqdm] = {}

        def progress(stage: str, info: dict) -> None:
            if stage == "lm":
                bar.total = max(bar.total, int(info.get("tokens", 0)))
                bar.n = int(info.get("tokens", 0))
                bar.set_postfix(loss=f"{info.get('loss', float('nan')):.3f}", refresh=False)
                bar.refresh()
            elif stage == "oracle":
                if "oracle" not in bars:
                    bars["oracle"] = tqdm(
                        total=config.lm.max_tokens, unit="tok", unit_scale=True, desc="oracle (no forget set)"
                    )
                bars["oracle"].n = int(info.get("tokens", 0))
                bars["oracle"].refresh()
            elif stage == "data":
                typer.echo(
                    f"data: {info.get('people')} people, units/epoch {info.get('units_per_epoch')}", err=True
                )
            elif stage == "sae" and info.get("stage") == "train":
                if "sae" not in bars:
                    bars["sae"] = tqdm(total=info.get("steps"), unit="step", desc="SAEs (all layers)")
                bars["sae"].n = int(info.get("step", 0))
                bars["sae"].refresh()
            elif stage == "sae":
                typer.echo(f"evaluating SAEs at layers {info.get('layers')}", err=True)
            elif stage == "measure":
                typer.echo(f"measuring: {info.get('what')}", err=True)

        manifest = build_world(out, config, force=force, progress=progress)
        for open_bar in [bar, *bars.values()]:
            open_bar.close()
        typer.echo(f"wrote world to {out} in {sum(manifest.extra['timings'].values()):.0f} s")
        _print_world_measurements(manifest.extra.get("measured", {}))


@world_app.command(
    cls=ConfigurableCommand,
    name="oracle",
    short_help="Train the oracle: the world's model without the forget set.",
)
def world_oracle(
    world: str | None = typer.Option(
        None, help="A world directory (default: $HOOKUNLEARN_WORLD or the shipped one)."
    ),
    force: bool = typer.Option(False, "--force", help="Retrain the oracle if the world has one."),
) -> None:
    """Train the world's oracle (same seed, tokenizer, architecture, schedule and token budget as its
    model, on its training text minus the forget set) into WORLD/oracle/, usable as `world:oracle`.

    \b
    Example: hookunlearn world oracle --world my-world/
    """
    with user_errors():
        from pathlib import Path

        from tqdm import tqdm

        from hookunlearn.world.assets import world_dir
        from hookunlearn.world.oracle import ORACLE_DIR, add_oracle

        path = Path(world) if world else world_dir()
        bar = tqdm(unit="tok", unit_scale=True, desc="oracle (no forget set)")

        def progress(info: dict) -> None:
            bar.n = int(info.get("tokens", 0))
            bar.set_postfix(loss=f"{info.get('loss', float('nan')):.3f}", refresh=False)
            bar.refresh()

        try:
            stats = add_oracle(path, force=force, progress=progress)
        finally:
            bar.close()
        typer.echo(
            f"wrote {path / ORACLE_DIR}: {stats['tokens']} tokens in {stats['wall_time_s']:.0f} s, "
            f"final loss {stats['final_loss']:.3f} (the forget set was {stats['forget_share_of_epoch_0']['units']:.1%} "
            "of an epoch's units)"
        )


@world_app.command(
    cls=ConfigurableCommand, name="info", short_help="The world's statistics and what its model knows."
)
def world_info(
    world: str | None = typer.Option(
        None, help="A world directory (default: $HOOKUNLEARN_WORLD or the shipped one)."
    ),
    saes: bool = typer.Option(True, "--saes/--no-saes", help="Also measure the SAEs (quality, latents)."),
    attacks: bool = typer.Option(
        False,
        "--attacks",
        help="Also run the forgetting measures and attacks on the model and its oracle (~2 min).",
    ),
    json_out: str | None = typer.Option(
        None, "--json", help="Also write the measurements to this JSON file."
    ),
) -> None:
    """Print the world's statistics and its model's measured knowledge (computed live).

    \b
    Example: hookunlearn world info --no-saes
    """
    with user_errors():
        from pathlib import Path

        from hookunlearn.artifacts import read_manifest, write_json
        from hookunlearn.world.assets import world_dir
        from hookunlearn.world.measure import measure_world

        path = Path(world) if world else world_dir()
        manifest = read_manifest(path, kind="world")
        summary = manifest.extra.get("summary", {})
        typer.echo(f"world {path} (seed {manifest.seed}, {manifest.extra.get('data_version')})")
        for key, value in summary.items():
            typer.echo(f"  {key}: {value}")
        measured = measure_world(
            path,
            layers=None if saes else [],
            attacks=attacks,
            progress=lambda m: typer.echo(f"measuring: {m}", err=True),
        )
        _print_world_measurements(measured)
        if json_out:
            write_json(Path(json_out), measured)
            typer.echo(f"wrote {json_out}")


def _print_world_measurements(measured: dict) -> None:
    knowledge = measured.get("knowledge")
    if not knowledge:
        return
    rows = [("entity QA recall", split, f"{value:.3f}") for split, value in knowledge["qa_recall"].items()]
    oracle = measured.get("oracle", {}).get("knowledge")
    if oracle:
        rows += [("oracle: entity QA recall", s, f"{v:.3f}") for s, v in oracle["qa_recall"].items()]
        rows += [
            (f"oracle: MC {domain} (continuation)", split, f"{value:.3f}")
            for domain, result in oracle["mc"].items()
            for split, value in {"all": result["continuation"], **result["by_split"]}.items()
        ]
    rows += [
        ("QA recall, no QA in training", s, f"{v:.3f}")
        for s, v in knowledge["qa_recall_no_qa_in_training"].items()
    ]
    for domain, result in knowledge["mc"].items():
        rows.append((f"MC {domain} (continuation)", "all", f"{result['continuation']:.3f}"))
        rows += [
            (f"MC {domain} (continuation)", split, f"{v:.3f}") for split, v in result["by_split"].items()
        ]
    for label, scores in measured.get("attacks", {}).items():
        rows.append((label, "model / oracle", f"{scores['model']:.3f} / {scores['oracle']:.3f}"))
    for layer, sae in measured.get("saes", {}).items():
        quality = sae["quality"]
        rows.append((f"SAE layer {layer}", "explained variance", f"{quality['explained_variance']:.3f}"))
        rows.append((f"SAE layer {layer}", "dead fraction", f"{quality['dead_fraction']:.3f}"))
        for template, ku in sae["known_unknown"].items():
            rows.append(
                (
                    f"SAE layer {layer}",
                    f"known-unknown score [{template}] (heldout)",
                    f"{ku['heldout_score']:.3f}",
                )
            )
        hz = sae["hazard_latent"]
        rows.append(
            (
                f"SAE layer {layer}",
                "hazard latent: P(hazard) / P(benign)",
                f"{hz['heldout_p_fires_hazard_sentence']:.2f} / {hz['heldout_p_fires_benign_sentence']:.2f}",
            )
        )
    _print_table(["measure", "on", "value"], rows)


@app.command(short_help="Render a run directory's self-contained HTML report (report.html).")
def report(
    run_dir: str = typer.Argument(..., help="A directory written by select, build, eval or demo."),
    out: str | None = typer.Option(None, help="The HTML file to write (default: RUN_DIR/report.html)."),
    force: bool = typer.Option(False, "--force", help="Replace the HTML file if it exists."),
) -> None:
    """Render (again) the offline HTML page of a run directory from its own files: tables, token
    highlights of the selected latents' top contexts, logit effects, figures; no network needed.

    \b
    Example: hookunlearn report sel/ --force
    """
    with user_errors():
        from hookunlearn.html_report import write_html_report

        typer.echo(f"wrote {write_html_report(run_dir, out, force=force)}")


def _register_with_recipes() -> None:
    """Recipes check their command tables against this app's options (the library never imports the CLI)."""
    from hookunlearn.cli.config import command_option_table

    from hookunlearn.recipes.recipe import register_command_options

    register_command_options(lambda: command_option_table(app))


_register_with_recipes()


def main() -> None:
    """Console-script entry point."""
    import os

    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun only rank 0 prints results
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    app(prog_name="hookunlearn")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
