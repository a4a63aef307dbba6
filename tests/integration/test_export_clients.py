"""An export behaves the same in every client: transformers' defaults, lm-evaluation-harness's
defaults, and the harness run inside ``hookunlearn eval`` (the ``lm_eval`` suite), item by item."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from hookunlearn.evaluation.mc import continuation_context, letter_prompt, parse_questions
from hookunlearn.evaluation.scoring import bos_prefix, encode_pair, score_pairs
from hookunlearn.export import EXPORT_INFO_NAME, export_model
from hookunlearn.models import load_model
from hookunlearn.world.assets import world_dir

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is not installed (hookunlearn[lm-eval])"
)

N_ITEMS = 24


@pytest.fixture(scope="module")
def world_model():
    return load_model("world", device="cpu")


@pytest.fixture(scope="module")
def exported(world_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clients") / "export"
    export_model(world_model, out)
    return out


@pytest.fixture(scope="module")
def records() -> list[dict]:
    path = world_dir() / "data" / "mc_hazard.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tasks(records, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hookunlearn.evaluation.harness import write_mc_task

    directory = tmp_path_factory.mktemp("tasks")
    write_mc_task(directory, "world_hazard_cont", records)
    write_mc_task(directory, "world_hazard_letter", records, protocol="letter")
    return directory


@pytest.fixture(scope="module")
def task_manager(tasks: Path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks))


def _ours(model, records, protocol: str) -> list[list[float]]:
    """hookunlearn's per-choice log-likelihoods (the mc suite's scoring) for the first N items."""
    questions = parse_questions(records[:N_ITEMS], "mc_hazard")
    prefix = bos_prefix(model, None)
    if protocol == "letter":
        pairs = [
            [encode_pair(model, letter_prompt(q), " " + "ABCD"[i], prefix) for i in range(len(q.choices))]
            for q in questions
        ]
    else:
        pairs = [
            [encode_pair(model, continuation_context(q), " " + c, prefix) for c in q.choices]
            for q in questions
        ]
    return [[s.logprob for s in score_pairs(model, row)] for row in pairs]


def _harness(results, task: str) -> list[list[float]]:
    rows = sorted(results["samples"][task], key=lambda row: row["doc_id"])
    return [[float(resp[0][0]) for resp in row["resps"]] for row in rows]


def test_export_files_are_portable(exported: Path) -> None:
    settings = json.loads((exported / "tokenizer_config.json").read_text())
    assert settings["tokenizer_class"] == "PreTrainedTokenizerFast"  # transformers 4 has no TokenizersBackend
    assert settings["model_max_length"] == 64
    assert not {"is_local", "local_files_only"} & set(settings)
    info_text = (exported / EXPORT_INFO_NAME).read_text()
    assert str(world_dir()) not in info_text and os.getcwd() not in info_text
    info = json.loads(info_text)
    assert info["tokenizer_bos"] == {"model_expects_bos": True, "tokenizer_adds_bos": True}
    umask = os.umask(0)
    os.umask(umask)
    for path in exported.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    card = (exported / "README.md").read_text()
    assert card.startswith("---\n") and 'library_name: "transformers"' in card
    assert "## Intended use and limits" in card


def test_transformers_defaults_feed_bos_and_generate_like_hookunlearn(exported: Path, world_model) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    text = "Mixing koride with noxium releases"
    bare = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer(text)["input_ids"] == [tokenizer.bos_token_id, *bare]
    hf = AutoModelForCausalLM.from_pretrained(exported)
    inputs = tokenizer(text, return_tensors="pt")
    generated = hf.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    ours = torch.tensor([bos_prefix(world_model, None) + bare])
    for _ in range(6):
        ours = torch.cat([ours, world_model(ours)[:, -1:].argmax(-1)], dim=1)
    assert generated[0].tolist() == ours[0].tolist()


@pytest.mark.parametrize(
    ("protocol", "task"), [("continuation", "world_hazard_cont"), ("letter", "world_hazard_letter")]
)
def test_lm_eval_hf_defaults_on_the_export_give_our_numbers_per_item(
    exported: Path, world_model, records, task_manager, protocol: str, task: str
) -> None:
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={exported},device=cpu",
        tasks=[task],
        task_manager=task_manager,
        limit=N_ITEMS,
        bootstrap_iters=0,
        log_samples=True,
        verbosity="ERROR",
    )
    theirs, ours = _harness(results, task), _ours(world_model, records, protocol)
    assert len(theirs) == len(ours) == N_ITEMS
    worst = max(
        abs(a - b)
        for row_a, row_b in zip(theirs, ours, strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    )
    assert worst < 1e-4
    accuracy = (
        sum(
            max(range(len(row)), key=row.__getitem__) == record["answer"]
            for row, record in zip(ours, records, strict=False)
        )
        / N_ITEMS
    )
    assert results["results"][task]["acc,none"] == pytest.approx(accuracy)


def test_lm_eval_suite_folds_the_harness_into_the_report_with_columns(tasks: Path, tmp_path: Path) -> None:
    from hookunlearn.pipeline.eval import EvalConfig, evaluate

    data = str(world_dir() / "data" / "mc_hazard.jsonl")
    run = evaluate(
        EvalConfig(
            model="world",
            baseline="world",
            oracle="auto",
            suites=(f"lm_eval:tasks=world_hazard_cont,include_path={tasks},name=harness",),
            mc=(data,),
            limit=N_ITEMS,
            out=str(tmp_path / "eval"),
            log_samples=True,
        )
    )
    report = run.report
    lines = (tmp_path / "eval" / "samples" / "model" / "harness.jsonl").read_text().splitlines()
    samples = [json.loads(line) for line in lines]
    assert len(samples) == N_ITEMS and {s["task"] for s in samples} == {"world_hazard_cont"}
    accuracy = sum(s["correct"] for s in samples) / N_ITEMS
    ours = report.evaluated.results
    mc_name = next(name for name, result in ours.items() if result.suite == "mc")
    assert ours["harness"].metrics["world_hazard_cont.acc"] == pytest.approx(
        ours[mc_name].metrics["accuracy"]
    )
    assert ours["harness"].n["world_hazard_cont.acc"] == N_ITEMS
    assert ours["harness"].metrics["world_hazard_cont.acc"] == pytest.approx(accuracy)
    for role in (report.baseline, report.oracle):
        assert role is not None and "world_hazard_cont.acc" in role.results["harness"].metrics
    oracle = report.oracle.results
    assert oracle["harness"].metrics["world_hazard_cont.acc"] == pytest.approx(
        oracle[mc_name].metrics["accuracy"]
    )


def test_harness_scores_a_conditional_clamp(
    world_model, records, tasks: Path, task_manager, tmp_path: Path
) -> None:
    """The clamp's hooks are on the model the harness scores; its numbers equal the mc suite's."""
    from hookunlearn.evaluation.harness_lm import HookunlearnLM
    from hookunlearn.interventions.clamp import ClampIntervention

    clamp = ClampIntervention(
        "blocks.1.hook_resid_post", str(world_dir() / "saes" / "layer_1"), list(range(0, 512, 3)), 50.0
    )
    clamp_dir = clamp.save(tmp_path / "clamp", model={"spec": "world"})
    lm = HookunlearnLM(pretrained="world", intervention=str(clamp_dir))
    try:
        clamped = lm_eval.simple_evaluate(
            model=lm, tasks=["world_hazard_cont"], task_manager=task_manager, limit=N_ITEMS,
            bootstrap_iters=0, log_samples=True, verbosity="ERROR",
        )  # fmt: skip
        expected = _ours(lm.model, records, "continuation")  # the same hooked model, scored by us
    finally:
        lm.close()
    theirs = _harness(clamped, "world_hazard_cont")
    plain = _ours(world_model, records, "continuation")
    assert (
        max(abs(a - b) for ra, rb in zip(theirs, expected, strict=True) for a, b in zip(ra, rb, strict=True))
        < 1e-4
    )
    assert (
        max(abs(a - b) for ra, rb in zip(theirs, plain, strict=True) for a, b in zip(ra, rb, strict=True))
        > 1e-2
    )


def _first_responses(manager, task: str, model, **kwargs) -> list:  # noqa: ANN001
    """Each document's first response (a generation, a log-likelihood) from one harness run, batch 4."""
    results = lm_eval.simple_evaluate(
        model=model, tasks=[task], task_manager=manager, bootstrap_iters=0, log_samples=True,
        verbosity="ERROR", batch_size=4, **kwargs,
    )  # fmt: skip
    samples = sorted(results["samples"][task], key=lambda row: row["doc_id"])
    return [row["resps"][0][0] for row in samples]


def test_harness_generation_by_hookunlearn_lm_equals_the_hf_model(
    world_model, exported: Path, tmp_path: Path
) -> None:
    """``generate_until`` through HookunlearnLM (batched, cached: the gsm8k suite's generator)
    writes the same texts as the harness's own hf model on the export, stop strings included."""
    from lm_eval.tasks import TaskManager

    from hookunlearn.evaluation.gsm8k import render_prompt
    from hookunlearn.evaluation.harness import write_generation_task
    from hookunlearn.evaluation.harness_lm import HookunlearnLM

    rows = (world_dir() / "data" / "entity_qa.jsonl").read_text(encoding="utf-8").splitlines()[:10]
    prompts = [
        render_prompt(json.loads(row)["prompt"].removeprefix("Q: ").split("\n")[0], []) for row in rows
    ]
    prompts.append("")  # an empty context: the harness starts it from BOS
    write_generation_task(
        tmp_path / "gen", "world_gen", prompts, until=["Question:", "\n\n"], max_gen_toks=12
    )
    manager = TaskManager(include_path=str(tmp_path / "gen"))
    theirs = _first_responses(manager, "world_gen", "hf", model_args=f"pretrained={exported},device=cpu")
    ours = _first_responses(manager, "world_gen", HookunlearnLM(world_model, batch_size=4))
    assert len(ours) == len(prompts)
    assert ours == theirs
    assert any(ours) and len(set(ours)) > 3  # real generations, not empty strings


def test_rolling_loglikelihood_by_hookunlearn_lm_equals_the_hf_model(
    world_model, exported: Path, tmp_path: Path
) -> None:
    """``loglikelihood_rolling`` (perplexity tasks) through HookunlearnLM, every request's windows
    scored in one batch, gives the harness's hf model's per-document log-likelihoods on the export,
    including documents longer than the context (several windows)."""
    from lm_eval.tasks import TaskManager

    from hookunlearn.evaluation.harness import _write_task
    from hookunlearn.evaluation.harness_lm import HookunlearnLM

    texts = (world_dir() / "data" / "retain_corpus.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    docs = [json.loads(line)["text"] for line in texts]
    docs.append(" ".join(docs))  # several windows of the 64-token context
    assert len(world_model.tokenizer(docs[-1])["input_ids"]) > 2 * world_model.cfg.n_ctx
    rows = [{"id": index, "text": doc} for index, doc in enumerate(docs)]
    body = ["output_type: loglikelihood_rolling", 'doc_to_text: ""', 'doc_to_target: "{{text}}"']
    _write_task(tmp_path / "ppl", "world_ppl", rows, "a test", body, [])  # the output type's metrics
    manager = TaskManager(include_path=str(tmp_path / "ppl"))
    theirs = _first_responses(manager, "world_ppl", "hf", model_args=f"pretrained={exported},device=cpu")
    ours = _first_responses(manager, "world_ppl", HookunlearnLM(world_model, batch_size=4))
    assert len(ours) == len(docs)
    assert max(abs(float(a) - float(b)) for a, b in zip(ours, theirs, strict=True)) < 1e-3
    assert len({round(float(value), 3) for value in ours}) == len(docs)  # real, distinct numbers


def test_export_cli_bos_and_report_options(tmp_path: Path) -> None:
    from hookunlearn.cli.app import app
    from typer.testing import CliRunner

    runner = CliRunner()
    bad = runner.invoke(app, ["export", "world", "--out", str(tmp_path / "x"), "--bos", "wavy"])
    assert bad.exit_code == 2 and "--bos 'wavy'" in bad.output and not (tmp_path / "x").exists()
    missing = runner.invoke(app, ["export", "world", "--out", str(tmp_path / "x"), "--report", str(tmp_path)])
    assert missing.exit_code == 2 and "--report" in missing.output and not (tmp_path / "x").exists()
    from hookunlearn.evaluation.report import EvalReport, ModelResults
    from hookunlearn.evaluation.suites import SuiteResult

    def results(accuracy: float) -> ModelResults:
        result = SuiteResult("mc", "mc_hazard", 1, {}, {"accuracy": accuracy})
        return ModelResults({"spec": "world"}, {"mc_hazard": result})

    report = EvalReport(evaluated=results(0.25), oracle=results(0.5)).to_dict()
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.json").write_text(json.dumps(report))
    kept = runner.invoke(
        app,
        [
            "export",
            "world",
            "--out",
            str(tmp_path / "keep"),
            "--bos",
            "keep",
            "--report",
            str(tmp_path / "rep"),
        ],
    )
    assert kept.exit_code == 0, kept.output
    card = (tmp_path / "keep" / "README.md").read_text()
    assert "| mc_hazard | accuracy | – | 0.25 | 0.5 |" in card
    for bad, why in (
        ({**report, "options": {"intervention": "runs/clamp"}}, "intervention"),
        (
            {
                **report,
                "evaluated": {**report["evaluated"], "model": {"source": "local", "name": str(tmp_path)}},
            },
            "not the exported",
        ),
    ):
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / "report.json").write_text(json.dumps(bad))
        refused = runner.invoke(
            app, ["export", "world", "--out", str(tmp_path / "y"), "--report", str(tmp_path / "bad")]
        )
        assert refused.exit_code == 2 and why in refused.output and not (tmp_path / "y").exists()
    # the shipped world tokenizer already prepends BOS: keep leaves it so
    info = json.loads((tmp_path / "keep" / EXPORT_INFO_NAME).read_text())
    assert info["tokenizer_bos"]["tokenizer_adds_bos"] is True


def test_unconditional_clamp_as_the_harness_steered_model(
    exported: Path, world_model, records, task_manager, tmp_path: Path
) -> None:
    """Our steer file, read by lm-eval's own `steered` model on the export, clamps what the same
    formula clamps at the clamp's TransformerLens hook: the hookpoint and the value map right."""
    from hookunlearn.interventions.clamp import ClampIntervention
    from hookunlearn.interventions.steered import write_steer_file
    from hookunlearn.saes import load_sae

    hook, latent, multiplier = "blocks.2.hook_resid_post", 7, 30.0
    sae_dir = str(world_dir() / "saes" / "layer_2")
    sae = load_sae(sae_dir, world_model)
    clamp = ClampIntervention(hook, sae_dir, [latent], multiplier)
    steer = write_steer_file(clamp, sae, "gpt2", tmp_path / "steer.pt")
    assert torch.load(steer, weights_only=True)["h.2"]["action"] == "clamp"
    results = lm_eval.simple_evaluate(
        model="steered", model_args=f"pretrained={exported},steer_path={steer},device=cpu",
        tasks=["world_hazard_cont"], task_manager=task_manager, limit=N_ITEMS,
        bootstrap_iters=0, log_samples=True, verbosity="ERROR",
    )  # fmt: skip
    direction = sae.W_dec[latent].detach() / sae.W_dec[latent].detach().norm()
    value = -multiplier * float(sae.W_dec[latent].detach().norm())

    def projection_clamp(x, hook=None):
        centred = x - sae.b_dec.detach()
        return x + direction * (value - (centred * direction).sum(-1, keepdim=True))

    with world_model.hooks(fwd_hooks=[(hook, projection_clamp)]):
        expected = _ours(world_model, records, "continuation")
    theirs, plain = _harness(results, "world_hazard_cont"), _ours(world_model, records, "continuation")
    assert (
        max(abs(a - b) for ra, rb in zip(theirs, expected, strict=True) for a, b in zip(ra, rb, strict=True))
        < 1e-3
    )
    assert (
        max(abs(a - b) for ra, rb in zip(theirs, plain, strict=True) for a, b in zip(ra, rb, strict=True))
        > 1e-2
    )


def _legacy_world_checkpoint(directory: Path) -> Path:
    """The world model with the tokenizer files as transformers 5 saved them before exports were
    portable: no BOS post-processor, the 5.x-only class, local state, the 1e30 length."""
    import shutil

    from hookunlearn.hf_files import remove_bos_post_processor

    shutil.copytree(world_dir() / "model", directory)
    state = json.loads((directory / "tokenizer.json").read_text())
    (directory / "tokenizer.json").write_text(json.dumps(remove_bos_post_processor(state, "<|endoftext|>")))
    legacy = {
        "backend": "tokenizers",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "is_local": True,
        "local_files_only": True,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "TokenizersBackend",
        "unk_token": "<|endoftext|>",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(legacy))
    return directory


def test_export_makes_a_legacy_tokenizer_portable(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    source = _legacy_world_checkpoint(tmp_path / "legacy")
    assert AutoTokenizer.from_pretrained(source)("a b")["input_ids"][0] != 0  # no BOS before
    out = tmp_path / "out"
    result = export_model(load_model(str(source), device="cpu"), out)
    assert result.tokenizer_adds_bos is True
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("a b")["input_ids"] == [0, *tokenizer("a b", add_special_tokens=False)["input_ids"]]
    settings = json.loads((out / "tokenizer_config.json").read_text())
    assert settings["tokenizer_class"] == "PreTrainedTokenizerFast" and settings["model_max_length"] == 64
    assert settings["add_bos_token"] is True and "is_local" not in settings


def test_export_bos_follows_the_model_both_ways(tmp_path: Path) -> None:
    """Qwen2 is fed no BOS: a tokenizer that adds one loses it. A Llama-class tokenizer config
    with add_bos_token false gains it (and the flag, which that class rebuilds from on load)."""
    from transformers import AutoTokenizer

    from hookunlearn.hf_files import add_bos_post_processor
    from tests.fixtures_hf import BOS, make_tiny_checkpoint

    qwen = make_tiny_checkpoint("qwen2", tmp_path / "q-src")
    state = json.loads((qwen / "tokenizer.json").read_text())
    bos_id = AutoTokenizer.from_pretrained(qwen).bos_token_id
    (qwen / "tokenizer.json").write_text(json.dumps(add_bos_post_processor(state, BOS, bos_id)))
    model = load_model(str(qwen), device="cpu")
    assert not model.cfg.default_prepend_bos
    result = export_model(model, tmp_path / "q-out")
    assert result.tokenizer_adds_bos is False
    assert AutoTokenizer.from_pretrained(tmp_path / "q-out")("hello")["input_ids"][0] != bos_id
    kept = export_model(model, tmp_path / "q-keep", add_bos=False)
    info = json.loads((tmp_path / "q-keep" / EXPORT_INFO_NAME).read_text())
    assert kept.tokenizer_adds_bos is True and info["tokenizer_bos"]["model_expects_bos"] is False
    assert any("one token more" in note for note in info["export"]["notes"])

    llama = make_tiny_checkpoint("llama", tmp_path / "l-src")
    settings = json.loads((llama / "tokenizer_config.json").read_text())
    (llama / "tokenizer_config.json").write_text(
        json.dumps({**settings, "tokenizer_class": "LlamaTokenizerFast", "add_bos_token": False})
    )
    result = export_model(load_model(str(llama), device="cpu"), tmp_path / "l-out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "l-out")
    assert result.tokenizer_adds_bos is True and tokenizer("hello")["input_ids"][0] == tokenizer.bos_token_id


def test_lm_eval_inputs_are_checked_before_any_model_loads(tmp_path: Path, tasks: Path, world_model) -> None:
    from hookunlearn.errors import HookunlearnError
    from hookunlearn.evaluation.harness_lm import HookunlearnLM
    from hookunlearn.pipeline.eval import EvalConfig, build_suites

    with pytest.raises(HookunlearnError, match="unknown task"):
        build_suites(EvalConfig(suites=(f"lm_eval:tasks=no_such_task,include_path={tasks}",)))
    with pytest.raises(HookunlearnError, match="include_path"):
        build_suites(EvalConfig(suites=(f"lm_eval:tasks=x,include_path={tmp_path / 'missing'}",)))
    with pytest.raises(HookunlearnError, match="name the tasks"):
        build_suites(EvalConfig(suites=("lm_eval",)))
    with pytest.raises(ValueError, match="unknown model_args interventon"):
        HookunlearnLM(world_model, interventon="runs/clamp")
    with pytest.raises(ValueError, match="no 'auto'"):
        HookunlearnLM(world_model, batch_size="auto")


def test_a_tokenizer_that_appends_eos_still_verifies(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, processors
    from transformers import AutoTokenizer

    from tests.fixtures_hf import EOS, make_tiny_checkpoint

    source = make_tiny_checkpoint("llama", tmp_path / "src")
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    eos_id = tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A $B:1 {EOS}", special_tokens=[(EOS, eos_id)]
    )
    tokenizer.save(str(source / "tokenizer.json"))
    result = export_model(load_model(str(source), device="cpu"), tmp_path / "out")
    ids = AutoTokenizer.from_pretrained(tmp_path / "out")("hello")["input_ids"]
    assert result.tokenizer_adds_bos is True and ids[-1] == eos_id and ids[0] != eos_id
