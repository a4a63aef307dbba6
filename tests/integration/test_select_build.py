"""`select` then `build` on the shipped world: the CLI end to end, the world's targets as
regression checks, and every user error of the two commands (exit 2, a message, no traceback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import Result
from hookunlearn.cli.app import app
from typer.testing import CliRunner

from hookunlearn.artifacts import read_manifest
from hookunlearn.data import load_records, load_texts
from hookunlearn.entities import parse_entity_prompts
from hookunlearn.errors import DataError, HookunlearnError
from hookunlearn.models import load_model
from hookunlearn.saes import load_sae
from hookunlearn.selection import Selection, select
from hookunlearn.subspace import Subspace, build

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # The world's tensors are small: extra intra-op threads only spin against each other on 2 cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def topic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`hookunlearn select` with every default (topic, the world's corpora and SAEs)."""
    out = tmp_path_factory.mktemp("runs") / "sel"
    result = runner.invoke(app, ["select", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.stdout  # the tables; progress bars go to stderr


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error: " in result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in: {result.output}"


# --- end to end and the world's targets -------------------------------------------------------


def test_cli_select_then_build_on_the_world_topic(topic_run: tuple[Path, str], tmp_path: Path) -> None:
    selection_dir, output = topic_run
    assert sorted(p.name for p in selection_dir.iterdir()) == [
        "features.json",
        "latents.json",
        "manifest.json",
        "report.html",
        "scores.png",
        "tensors.safetensors",
    ]
    selection = Selection.load(selection_dir)
    assert sorted(selection.layers) == [0, 1, 2, 3]
    lines = output.splitlines()
    layer_rows = [line.split() for line in lines if line.split()[:1] in (["0"], ["1"], ["2"], ["3"])]
    assert any(line.startswith("layer") and "layer score" in line for line in lines)
    assert [row for row in layer_rows if "<-" in row] == [
        [str(selection.chosen_layer), f"{selection.chosen.layer_score:.4f}", "<-", "chosen"]
    ]
    assert any(line.split() == ["rank", "latent", "score", "freq[forget]", "freq[retain]"] for line in lines)
    best = selection.feature_table(n=1)[0]
    assert any(line.split()[:3] == ["1", str(best["latent"]), f"{best['score']:.4f}"] for line in lines)
    assert f"wrote {selection_dir}" in output
    features = json.loads((selection_dir / "features.json").read_text())
    assert len(features) == 50 and features[0]["latent"] == best["latent"]
    manifest = read_manifest(selection_dir, kind="selection")
    assert manifest.options["model"] == "world"
    assert manifest.options["sae"] == ["world:0", "world:1", "world:2", "world:3"]
    assert sorted(manifest.data) == ["forget", "retain"]
    assert manifest.data["forget"]["spec"] == "world:forget_corpus"

    out = tmp_path / "sub"
    result = runner.invoke(app, ["build", str(selection_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "report.html", "tensors.safetensors"]
    for key in ("effective_rank_relevant", "energy_share_forget", "energy_share_retain"):
        assert key in result.stdout
    assert "principal angles (deg) min/median/max" in result.stdout
    assert f"wrote {out}" in result.stdout
    subspace = Subspace.load(out)
    assert (
        subspace.layer == selection.chosen_layer and subspace.k == 32
    )  # the default k (world sweep, docs/methods/index.md)
    assert subspace.U_rel.shape == (128, subspace.relevant.rank)
    assert subspace.relevant.latents + subspace.relevant.dropped == selection.top_latents(32)
    assert read_manifest(out, kind="subspace").inputs == {"selection": str(selection_dir)}
    printed = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines() if line.strip()}
    assert printed["energy_share_forget"] == f"{subspace.diagnostics['energy_share_forget']:.4f}"


def test_world_topic_target_relevant_subspace_holds_more_forget_energy(topic_run: tuple[Path, str]) -> None:
    selection = Selection.load(topic_run[0])
    scores = {layer: chosen.layer_score for layer, chosen in selection.layers.items()}
    assert selection.chosen_layer == max(scores, key=lambda layer: scores[layer])
    model = load_model("world", device="cpu")
    sae = load_sae(f"world:{selection.chosen_layer}", model)
    diagnostics = build(selection, sae, k=16).diagnostics
    forget, retain = diagnostics["energy_share_forget"], diagnostics["energy_share_retain"]
    # measured on the shipped world: layer 2 chosen, forget 0.420 vs retain 0.223
    assert forget > retain, f"layer {selection.chosen_layer}: forget {forget:.3f}, retain {retain:.3f}"


def test_world_entity_target_best_latent_generalises_and_targets_look_known() -> None:
    model = load_model("world", device="cpu")
    saes = [load_sae(f"world:{layer}", model) for layer in range(model.cfg.n_layers)]
    prompts = parse_entity_prompts(load_records("world:entity_prompts"), "world:entity_prompts")
    selection = select(model, saes, objective="entity", entities=prompts)
    chosen = selection.chosen
    best = chosen.ranked()[0]
    # heldout_scores() itself trips the beartype hook (see test_selection_stats); same numbers by hand
    heldout = float(chosen.roles["known:heldout"].freq[best] - chosen.roles["unknown:heldout"].freq[best])
    # measured on the shipped world: layer 2, latent 209, select 0.672, held-out 0.659
    assert heldout >= 0.5, f"layer {selection.chosen_layer} latent {best}: held-out score {heldout:.3f}"
    diagnostics = build(selection, saes[selection.chosen_layer], k=16).diagnostics
    assert diagnostics["target_nearer"] == "known", diagnostics


# --- user errors ------------------------------------------------------------------------------


def test_select_refuses_an_empty_corpus_file(tmp_path: Path) -> None:
    empty = tmp_path / "forget.jsonl"
    empty.write_text("")
    out = tmp_path / "sel"
    result = runner.invoke(app, ["select", "--forget", str(empty), "--out", str(out)])
    assert_user_error(result, f"data file {empty} is empty")
    assert not out.exists()


def test_select_names_a_missing_text_column(tmp_path: Path) -> None:
    out = tmp_path / "sel"
    result = runner.invoke(app, ["select", "--text-column", "body", "--out", str(out)])
    assert_user_error(result, "world:forget_corpus", "lacks column(s) body", "found: text")
    assert not out.exists()


def test_select_refuses_an_unknown_objective(tmp_path: Path) -> None:
    result = runner.invoke(app, ["select", "--objective", "facts", "--out", str(tmp_path / "sel")])
    assert_user_error(result, "--objective 'facts'", "'topic' or 'entity'")


def test_select_and_build_refuse_an_existing_output(topic_run: tuple[Path, str]) -> None:
    selection_dir = topic_run[0]
    before = (selection_dir / "manifest.json").read_text()
    for argv in (
        ["select", "--out", str(selection_dir)],
        ["build", str(selection_dir), "--out", str(selection_dir)],
    ):
        assert_user_error(
            runner.invoke(app, argv), f"output directory {selection_dir} already exists", "--force"
        )
    assert (selection_dir / "manifest.json").read_text() == before


def test_build_refuses_k_above_the_available_latents(topic_run: tuple[Path, str], tmp_path: Path) -> None:
    out = tmp_path / "sub"
    result = runner.invoke(app, ["build", str(topic_run[0]), "--k", "5000", "--out", str(out)])
    assert_user_error(result, "k=5000 is more than the 1024 eligible latents", "use a smaller k")
    assert not out.exists()


def test_build_refuses_a_selection_made_for_another_model(
    topic_run: tuple[Path, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # requested here, not as an argument, so that a first build of it runs under one torch thread
    quick_world: Path = request.getfixturevalue("quick_world")
    out = tmp_path / "sub"
    argv = ["build", str(topic_run[0]), "--model", str(quick_world / "model"), "--out", str(out)]
    result = runner.invoke(app, argv)
    assert_user_error(
        result, "was made for another model", "'model.config_fingerprint'", str(quick_world / "model")
    )
    assert not out.exists()


def test_build_refuses_an_sae_for_another_layer(topic_run: tuple[Path, str], tmp_path: Path) -> None:
    selection = Selection.load(topic_run[0])
    other = (selection.chosen_layer + 1) % 4
    wrong_hook = f"blocks.{other}.hook_resid_post"
    result = runner.invoke(
        app, ["build", str(topic_run[0]), "--sae", f"world:{other}", "--out", str(tmp_path / "s")]
    )
    assert_user_error(result, "field 'hook_name'", wrong_hook, selection.hook)

    model = load_model("world", device="cpu")
    with pytest.raises(HookunlearnError) as excinfo:
        build(selection, load_sae(f"world:{other}", model))
    message = str(excinfo.value)
    assert f"the SAE given for layer {selection.chosen_layer} differs" in message and wrong_hook in message


# --- load_texts (the corpora's loader) --------------------------------------------------------


def test_load_texts_keeps_non_empty_strings_of_the_column(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [{"body": "one"}, {"body": "  "}, {"body": "two", "text": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_texts(path, "body") == ["one", "two"]
    lines = tmp_path / "corpus.txt"
    lines.write_text("alpha\n\n  \nbeta\n")
    assert load_texts(lines) == ["alpha", "beta"]
    assert len(load_texts("world:forget_corpus")) == 640


@pytest.mark.parametrize(
    ("content", "column", "message"),
    [
        ("", "text", "is empty"),
        ('{"text": "  "}\n{"text": ""}\n', "text", "column 'text' has no non-empty text"),
        (
            '{"text": "a"}\n{"body": "b"}\n',
            "text",
            "record 2 lacks column(s) text; expected columns: text (found: body)",
        ),
        ('{"text": "a"}\n{"text": 7}\n', "text", "column 'text' of record 2 is not text"),
    ],
)
def test_load_texts_errors_name_the_file_and_the_problem(
    tmp_path: Path, content: str, column: str, message: str
) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as excinfo:
        load_texts(path, column)
    assert message in str(excinfo.value) and str(path) in str(excinfo.value)
