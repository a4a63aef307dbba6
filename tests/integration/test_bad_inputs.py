"""The bad-input catalogue: every command, tens of mistakes a new user makes, one promise.

For each case (the command in-process through Typer's `CliRunner`, on the quick world and small
files in a temporary directory): exit code 2, exactly one ``error:`` line and it is stderr's first
line, no traceback, no output directory and no ``.partial`` staging left behind, and every
existing output byte-identical afterwards. docs/errors.md states the promise and these numbers.

A case is ``(id, argv, expected)``: ``argv`` uses the placeholders below (``{OUT}`` is a fresh
output path per case) and ``expected`` is a piece of the error line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hookunlearn.cli.app import app
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def place(quick_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The inputs the cases refer to: a selection, a subspace, a clamp directory, bad files."""
    root = tmp_path_factory.mktemp("bad_inputs")
    data = quick_world / "data"
    saes = [arg for layer in range(2) for arg in ("--sae", str(quick_world / "saes" / f"layer_{layer}"))]
    common = ["--forget", str(data / "forget_corpus.jsonl"), "--retain", str(data / "retain_corpus.jsonl")]
    model = str(quick_world / "model")
    result = runner.invoke(
        app, ["select", "--model", model, *saes, *common, "--layer", "1", "--out", str(root / "sel")]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["build", str(root / "sel"), "--k", "4", "--out", str(root / "sub")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["unlearn", str(root / "sub"), "--method", "clamp", "--out", str(root / "clamp")]
    )
    assert result.exit_code == 0, result.output
    files = root / "files"
    files.mkdir()
    (files / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9 cr\xe8me"}\n')
    (files / "latin1.txt").write_bytes(b"first line\nna\xefve\n")
    (files / "broken.jsonl").write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    (files / "empty.jsonl").write_bytes(b"")
    (files / "other_column.jsonl").write_text('{"body": "a"}\n', encoding="utf-8")
    (files / "numbers.jsonl").write_text('{"text": 7}\n', encoding="utf-8")
    (files / "list.jsonl").write_text("[1, 2]\n", encoding="utf-8")
    (files / "data.xlsx").write_text("not a spreadsheet", encoding="utf-8")
    (files / "mc_no_choices.jsonl").write_text('{"question": "q?", "answer": 0}\n', encoding="utf-8")
    (files / "mc_bad_answer.jsonl").write_text(
        '{"question": "q?", "choices": ["a", "b"], "answer": 5}\n', encoding="utf-8"
    )
    (files / "qa_no_split.jsonl").write_text(
        '{"prompt": "p", "answer": "a", "entity": "e"}\n', encoding="utf-8"
    )
    (files / "a_dir.jsonl").mkdir()
    (files / "plain_file").write_text("x", encoding="utf-8")
    (files / "misspelt.toml").write_text(
        "[unlaern]\nsteps = 3\n[selct]\n[biuld]\n[evall]\n", encoding="utf-8"
    )
    (files / "wrong_type.toml").write_text(
        '[select]\nbatch_size = "many"\n[build]\nk = "all"\n[unlearn]\nsteps = "lots"\n[eval]\nlimit = "x"\n'
        '[export]\ntolerance = "tight"\n[world.build]\nseed = "s"\n',
        encoding="utf-8",
    )
    (files / "not_toml.toml").write_text("[unlearn\nsteps = 3\n", encoding="utf-8")
    (files / "unknown_option.toml").write_text(
        "[select]\ncolour = 1\n[build]\ncolour = 1\n[unlearn]\ncolour = 1\n[eval]\ncolour = 1\n"
        "[export]\ncolour = 1\n",
        encoding="utf-8",
    )
    (files / "config.ini").write_text("[unlearn]\n", encoding="utf-8")
    # a selection and a subspace from a future hookunlearn, and broken run directories
    for name, source in (("future_sel", "sel"), ("future_sub", "sub")):
        shutil.copytree(root / source, root / name)
        manifest = json.loads((root / name / "manifest.json").read_text())
        manifest["schema_version"] = 99
        (root / name / "manifest.json").write_text(json.dumps(manifest))
    shutil.copytree(root / "sel", root / "no_tensors")
    (root / "no_tensors" / "tensors.safetensors").unlink()
    shutil.copytree(root / "sel", root / "bad_manifest")
    (root / "bad_manifest" / "manifest.json").write_text("{not json", encoding="utf-8")
    shutil.copytree(root / "sel", root / "latin1_manifest")
    (root / "latin1_manifest" / "manifest.json").write_bytes(b'{"kind": "caf\xe9"}')
    (root / "not_a_run").mkdir()
    # checkpoints: no tokenizer (issue 17 item 1), no weights, a corrupt config
    for name in ("no_tokenizer", "no_weights", "bad_config"):
        shutil.copytree(quick_world / "model", root / name)
    for tokenizer_file in (root / "no_tokenizer").glob("tokenizer*"):
        tokenizer_file.unlink()
    for weights in (root / "no_weights").glob("*.safetensors"):
        weights.unlink()
    (root / "bad_config" / "config.json").write_text("{", encoding="utf-8")
    existing = root / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("an earlier output", encoding="utf-8")
    (root / "out").mkdir()
    return {
        "W": str(quick_world),
        "MODEL": model,
        "D": str(data),
        "SEL": str(root / "sel"),
        "SUB": str(root / "sub"),
        "CLAMP": str(root / "clamp"),
        "F": str(files),
        "R": str(root),
        "EXISTING": str(existing),
        "SAE0": str(quick_world / "saes" / "layer_0"),
    }


# fmt: off
SELECT = [
    ("select-no-out", ["select"], "Missing option '--out'"),
    ("select-objective", ["select", "--objective", "topics", "--out", "{OUT}"], "--objective 'topics'"),
    ("select-layers", ["select", "--layers", "one,two", "--out", "{OUT}"], "--layers 'one,two'"),
    ("select-backend", ["select", "--backend", "hooky", "--out", "{OUT}"], "hooky"),
    ("select-batch-0", ["select", "--batch-size", "0", "--out", "{OUT}"], "--batch-size"),
    ("select-max-tokens-1", ["select", "--max-tokens", "1", "--out", "{OUT}"], "--max-tokens"),
    ("select-top-n-0", ["select", "--top-n", "0", "--out", "{OUT}"], "--top-n"),
    ("select-top-contexts-neg", ["select", "--top-contexts", "-1", "--out", "{OUT}"], "--top-contexts"),
    ("select-batch-text", ["select", "--batch-size", "many", "--out", "{OUT}"], "Invalid value for '--batch-size'"),
    ("select-out-exists", ["select", "--out", "{EXISTING}"], "already exists"),
    ("select-out-file", ["select", "--out", "{F}/plain_file"], "is not a directory"),
    ("select-out-under-file", ["select", "--out", "{F}/plain_file/sel"], "is a file, not a directory"),
    ("select-forget-missing", ["select", "--forget", "{F}/nope.jsonl", "--out", "{OUT}"], "does not exist"),
    ("select-forget-dir", ["select", "--forget", "{F}/a_dir.jsonl", "--out", "{OUT}"], "is a directory"),
    ("select-forget-latin1", ["select", "--forget", "{F}/latin1.jsonl", "--out", "{OUT}"], "not UTF-8 text (byte 0xe9 at offset 13"),
    ("select-forget-latin1-txt", ["select", "--forget", "{F}/latin1.txt", "--out", "{OUT}"], "line 2"),
    ("select-forget-broken", ["select", "--forget", "{F}/broken.jsonl", "--out", "{OUT}"], "invalid JSON at line 2"),
    ("select-forget-empty", ["select", "--forget", "{F}/empty.jsonl", "--out", "{OUT}"], "is empty"),
    ("select-forget-column", ["select", "--forget", "{F}/other_column.jsonl", "--out", "{OUT}"], "record 1 lacks column(s) text"),
    ("select-forget-numbers", ["select", "--forget", "{F}/numbers.jsonl", "--out", "{OUT}"], "of record 1 is not text"),
    ("select-forget-not-objects", ["select", "--forget", "{F}/list.jsonl", "--out", "{OUT}"], "record 1 is not a JSON object"),
    ("select-forget-xlsx", ["select", "--forget", "{F}/data.xlsx", "--out", "{OUT}"], "unknown extension '.xlsx'"),
    ("select-text-column", ["select", "--text-column", "body", "--out", "{OUT}"], "lacks column(s) body"),
    ("select-retain-latin1", ["select", "--retain", "{F}/latin1.jsonl", "--out", "{OUT}"], "not UTF-8"),
    ("select-model-missing", ["select", "--model", "{R}/nope_model", "--out", "{OUT}"], "nope_model"),
    ("select-model-file", ["select", "--model", "{F}/plain_file", "--out", "{OUT}"], "is a file, not a directory"),
    ("select-model-clamp", ["select", "--model", "{CLAMP}", "--sae", "{SAE0}", "--out", "{OUT}"], "--intervention"),
    ("select-model-run-dir", ["select", "--model", "{SEL}", "--sae", "{SAE0}", "--out", "{OUT}"], "run directory, not a model"),
    ("select-model-no-tokenizer", ["select", "--model", "{R}/no_tokenizer", "--sae", "{SAE0}", "--out", "{OUT}"], "has no tokenizer"),
    ("select-sae-missing", ["select", "--model", "{MODEL}", "--sae", "{R}/nope_sae", "--out", "{OUT}"], "nope_sae"),
    ("select-score", ["select", "--score", "bogus", "--out", "{OUT}"], "score 'bogus' does not apply to objective 'topic'"),
    ("select-score-objective", ["select", "--objective", "entity", "--score", "mean_diff", "--out", "{OUT}"], "choose ferrando"),
    ("select-dtype", ["select", "--dtype", "float8", "--out", "{OUT}"], "float8"),
    ("select-device", ["select", "--device", "tpu", "--out", "{OUT}"], "tpu"),
    ("select-extra-argument", ["select", "{SEL}", "--out", "{OUT}"], "unexpected extra argument"),
    ("select-unknown-option", ["select", "--colour", "red", "--out", "{OUT}"], "No such option"),
    ("select-config-missing", ["select", "--config", "{F}/nope.toml", "--out", "{OUT}"], "does not exist"),
    ("select-config-misspelt", ["select", "--config", "{F}/misspelt.toml", "--out", "{OUT}"], "[unlaern] is not a command's table (did you mean [unlearn]?)"),
    ("select-config-type", ["select", "--config", "{F}/wrong_type.toml", "--out", "{OUT}"], "wrong_type.toml: [select] batch_size"),
    ("select-config-syntax", ["select", "--config", "{F}/not_toml.toml", "--out", "{OUT}"], "not valid TOML"),
    ("select-config-unknown", ["select", "--config", "{F}/unknown_option.toml", "--out", "{OUT}"], "[select] has no option 'colour'"),
    ("select-config-format", ["select", "--config", "{F}/config.ini", "--out", "{OUT}"], "unknown config format"),
    ("select-recipe", ["select", "--recipe", "sspu-wrld", "--out", "{OUT}"], "sspu-wrld"),
]

BUILD = [
    ("build-no-selection", ["build", "--out", "{OUT}"], "Missing argument"),
    ("build-no-out", ["build", "{SEL}"], "Missing option '--out'"),
    ("build-selection-missing", ["build", "{R}/nope", "--out", "{OUT}"], "does not exist"),
    ("build-selection-file", ["build", "{F}/plain_file", "--out", "{OUT}"], "is not a directory"),
    ("build-selection-not-run", ["build", "{R}/not_a_run", "--out", "{OUT}"], "has no manifest.json"),
    ("build-selection-is-subspace", ["build", "{SUB}", "--out", "{OUT}"], "field 'kind' is 'subspace'"),
    ("build-selection-future", ["build", "{R}/future_sel", "--out", "{OUT}"], "written by a newer hookunlearn"),
    ("build-selection-bad-json", ["build", "{R}/bad_manifest", "--out", "{OUT}"], "not valid JSON"),
    ("build-selection-latin1", ["build", "{R}/latin1_manifest", "--out", "{OUT}"], "not valid JSON"),
    ("build-selection-no-tensors", ["build", "{R}/no_tensors", "--out", "{OUT}"], "tensors.safetensors is missing"),
    ("build-k-0", ["build", "{SEL}", "--k", "0", "--out", "{OUT}"], "--k"),
    ("build-k-text", ["build", "{SEL}", "--k", "all", "--out", "{OUT}"], "Invalid value for '--k'"),
    ("build-out-exists", ["build", "{SEL}", "--out", "{EXISTING}"], "already exists"),
    ("build-out-is-input", ["build", "{SEL}", "--out", "{SEL}", "--force"], "is the input SELECTION_DIR"),
    ("build-out-inside-input", ["build", "{SEL}", "--out", "{SEL}/sub", "--force"], "is inside the input SELECTION_DIR"),
    ("build-out-file", ["build", "{SEL}", "--out", "{F}/plain_file"], "is not a directory"),
    ("build-backend", ["build", "{SEL}", "--backend", "hooky", "--out", "{OUT}"], "hooky"),
    ("build-sae-missing", ["build", "{SEL}", "--sae", "{R}/nope_sae", "--out", "{OUT}"], "nope_sae"),
    ("build-other-model", ["build", "{SEL}", "--model", "world", "--out", "{OUT}"], "config_fingerprint"),
    ("build-two-selections", ["build", "{SEL}", "{SUB}", "--out", "{OUT}"], "unexpected extra argument"),
    ("build-config-type", ["build", "{SEL}", "--config", "{F}/wrong_type.toml", "--out", "{OUT}"], "[build] k"),
    ("build-config-unknown", ["build", "{SEL}", "--config", "{F}/unknown_option.toml", "--out", "{OUT}"], "[build] has no option 'colour'"),
    ("build-config-misspelt", ["build", "{SEL}", "--config", "{F}/misspelt.toml", "--out", "{OUT}"], "did you mean"),
]

UNLEARN = [
    ("unlearn-no-out", ["unlearn", "{SUB}"], "Missing option '--out'"),
    ("unlearn-method", ["unlearn", "{SUB}", "--method", "forgetit", "--out", "{OUT}"], "--method 'forgetit'"),
    ("unlearn-schedule", ["unlearn", "{SUB}", "--schedule", "wavy", "--out", "{OUT}"], "--schedule 'wavy'"),
    ("unlearn-regularizer", ["unlearn", "{SUB}", "-o", "regularizer=foo", "--out", "{OUT}"], "'foo' is not one of"),
    ("unlearn-coeff-text", ["unlearn", "{SUB}", "-o", "steering_coeff=abc", "--out", "{OUT}"], "'abc' is not a number"),
    ("unlearn-option-form", ["unlearn", "{SUB}", "-o", "nonsense", "--out", "{OUT}"], "KEY=VALUE"),
    ("unlearn-option-unknown", ["unlearn", "{SUB}", "-o", "colour=3", "--out", "{OUT}"], "no option(s) colour"),
    ("unlearn-lr-nan", ["unlearn", "{SUB}", "--lr", "nan", "--out", "{OUT}"], "--lr nan"),
    ("unlearn-lr-negative", ["unlearn", "{SUB}", "--lr", "-1", "--out", "{OUT}"], "--lr -1"),
    ("unlearn-lr-inf", ["unlearn", "{SUB}", "--lr", "inf", "--out", "{OUT}"], "--lr inf"),
    ("unlearn-lr-zero", ["unlearn", "{SUB}", "--lr", "0", "--out", "{OUT}"], "finite number > 0"),
    ("unlearn-grad-clip-nan", ["unlearn", "{SUB}", "--grad-clip", "nan", "--out", "{OUT}"], "--grad-clip nan"),
    ("unlearn-grad-clip-negative", ["unlearn", "{SUB}", "--grad-clip", "-2", "--out", "{OUT}"], "--grad-clip -2"),
    ("unlearn-steps-0", ["unlearn", "{SUB}", "--steps", "0", "--out", "{OUT}"], "--steps"),
    ("unlearn-warmup-negative", ["unlearn", "{SUB}", "--warmup-steps", "-1", "--out", "{OUT}"], "--warmup-steps"),
    ("unlearn-resume-nothing", ["unlearn", "{SUB}", "--resume", "--out", "{OUT}", "--forget", "{D}/forget_corpus.jsonl", "--retain", "{D}/retain_corpus.jsonl"], "start without --resume"),
    ("unlearn-subspace-missing", ["unlearn", "{R}/nope", "--out", "{OUT}"], "does not exist"),
    ("unlearn-subspace-is-selection", ["unlearn", "{SEL}", "--out", "{OUT}"], "field 'kind' is 'selection'"),
    ("unlearn-subspace-future", ["unlearn", "{R}/future_sub", "--out", "{OUT}"], "written by a newer hookunlearn"),
    ("unlearn-subspace-file", ["unlearn", "{F}/plain_file", "--out", "{OUT}"], "is not a directory"),
    ("unlearn-out-is-input", ["unlearn", "{SUB}", "--out", "{SUB}", "--force"], "is the input SUBSPACE_DIR"),
    ("unlearn-out-exists", ["unlearn", "{SUB}", "--out", "{EXISTING}"], "already exists"),
    ("unlearn-forget-latin1", ["unlearn", "{SUB}", "--forget", "{F}/latin1.jsonl", "--retain", "{D}/retain_corpus.jsonl", "--out", "{OUT}"], "not UTF-8"),
    ("unlearn-forget-missing", ["unlearn", "{SUB}", "--forget", "{F}/nope.jsonl", "--retain", "{D}/retain_corpus.jsonl", "--out", "{OUT}"], "does not exist"),
    ("unlearn-retain-dir", ["unlearn", "{SUB}", "--forget", "{D}/forget_corpus.jsonl", "--retain", "{F}/a_dir.jsonl", "--out", "{OUT}"], "is a directory"),
    ("unlearn-no-data", ["unlearn", "{SUB}", "--out", "{OUT}"], "pass --forget and --retain"),
    ("unlearn-stage", ["unlearn", "{SUB}", "--stage", "armour", "--out", "{OUT}"], "armour"),
    ("unlearn-stage-option", ["unlearn", "{SUB}", "--stage", "lat:eps=abc", "--out", "{OUT}"], "abc"),
    ("unlearn-clamp-stage", ["unlearn", "{SUB}", "--method", "clamp", "--stage", "sam", "--out", "{OUT}"], "is an intervention"),
    ("unlearn-trainable-layers", ["unlearn", "{SUB}", "--trainable-layers", "x,y", "--out", "{OUT}"], "use 'auto' or a comma list"),
    ("unlearn-layer-mismatch", ["unlearn", "{SUB}", "--layer", "0", "--forget", "{D}/forget_corpus.jsonl", "--retain", "{D}/retain_corpus.jsonl", "--out", "{OUT}"], "leave the layer unset or pass 1"),
    ("unlearn-other-model", ["unlearn", "{SUB}", "--model", "world", "--out", "{OUT}"], "config_fingerprint"),
    ("unlearn-dtype", ["unlearn", "{SUB}", "--dtype", "float8", "--out", "{OUT}"], "float8"),
    ("unlearn-config-misspelt", ["unlearn", "{SUB}", "--config", "{F}/misspelt.toml", "--out", "{OUT}"], "(did you mean [unlearn]?)"),
    ("unlearn-config-type", ["unlearn", "{SUB}", "--config", "{F}/wrong_type.toml", "--out", "{OUT}"], "wrong_type.toml: [unlearn] steps"),
    ("unlearn-config-unknown", ["unlearn", "{SUB}", "--config", "{F}/unknown_option.toml", "--out", "{OUT}"], "[unlearn] has no option 'colour'"),
    ("unlearn-recipe", ["unlearn", "{SUB}", "--recipe", "nope", "--out", "{OUT}"], "nope"),
    ("unlearn-options-before-command", ["--steps", "3", "unlearn", "{SUB}", "--out", "{OUT}"], "No such option"),
]

EVAL = [
    ("eval-suite", ["eval", "{MODEL}", "--suite", "nope", "--out", "{OUT}"], "nope"),
    ("eval-suite-option", ["eval", "{MODEL}", "--suite", "mc:colour=1", "--out", "{OUT}"], "no option(s) colour"),
    ("eval-suite-int", ["eval", "{MODEL}", "--suite", "mc:limit=abc", "--out", "{OUT}"], "limit='abc'"),
    ("eval-suite-literal", ["eval", "{MODEL}", "--suite", "mc:protocol=wavy", "--out", "{OUT}"], "wavy"),
    ("eval-suite-form", ["eval", "{MODEL}", "--suite", "mc:limit", "--out", "{OUT}"], "KEY=VALUE"),
    ("eval-suite-data-missing", ["eval", "{MODEL}", "--suite", "mc:data={F}/nope.jsonl", "--out", "{OUT}"], "does not exist"),
    ("eval-mc-latin1", ["eval", "{MODEL}", "--suite", "qa:data={D}/entity_qa.jsonl", "--mc", "{F}/latin1.jsonl", "--out", "{OUT}"], "not UTF-8"),
    ("eval-mc-dir", ["eval", "{MODEL}", "--mc", "{F}/a_dir.jsonl", "--out", "{OUT}"], "is a directory"),
    ("eval-mc-broken", ["eval", "{MODEL}", "--mc", "{F}/broken.jsonl", "--out", "{OUT}"], "invalid JSON at line 2"),
    ("eval-mc-empty", ["eval", "{MODEL}", "--mc", "{F}/empty.jsonl", "--out", "{OUT}"], "is empty"),
    ("eval-mc-schema-after-qa", ["eval", "{MODEL}", "--qa", "{D}/entity_qa.jsonl", "--mc", "{F}/mc_no_choices.jsonl", "--out", "{OUT}"], "record 1 lacks column(s) choices"),
    ("eval-mc-answer-range", ["eval", "{MODEL}", "--mc", "{F}/mc_bad_answer.jsonl", "--out", "{OUT}"], "record 1: 'answer' is 5"),
    ("eval-qa-schema-after-mc", ["eval", "{MODEL}", "--mc", "{D}/mc_hazard.jsonl", "--qa", "{F}/qa_no_split.jsonl", "--out", "{OUT}"], "lacks column(s) split"),
    ("eval-qa-latin1", ["eval", "{MODEL}", "--qa", "{F}/latin1.jsonl", "--out", "{OUT}"], "not UTF-8"),
    ("eval-perplexity-latin1", ["eval", "{MODEL}", "--suite", "perplexity:data={F}/latin1.jsonl", "--out", "{OUT}"], "not UTF-8"),
    ("eval-suite-clash", ["eval", "{MODEL}", "--suite", "relearn:forget_split=unknown", "--suite", "relearn:forget_split=forget", "--out", "{OUT}"], "both named 'relearn_entity_qa'"),
    ("eval-suite-name-empty", ["eval", "{MODEL}", "--suite", "relearn:name=", "--out", "{OUT}"], "name= needs a value"),
    ("eval-protocol", ["eval", "{MODEL}", "--protocol", "letters", "--mc", "{D}/mc_hazard.jsonl"], "--protocol 'letters'"),
    ("eval-log-samples", ["eval", "{MODEL}", "--log-samples"], "--log-samples"),
    ("eval-out-exists", ["eval", "{MODEL}", "--out", "{EXISTING}"], "already exists"),
    ("eval-out-is-model", ["eval", "{R}/no_weights", "--out", "{R}/no_weights", "--force"], "is the input MODEL"),
    ("eval-out-file", ["eval", "{MODEL}", "--out", "{F}/plain_file"], "is not a directory"),
    ("eval-limit-0", ["eval", "{MODEL}", "--limit", "0", "--out", "{OUT}"], "--limit"),
    ("eval-batch-0", ["eval", "{MODEL}", "--batch-size", "0", "--out", "{OUT}"], "--batch-size"),
    ("eval-device", ["eval", "{MODEL}", "--device", "tpu", "--qa", "{D}/entity_qa.jsonl", "--out", "{OUT}"], "device 'tpu' is not a device name"),
    ("eval-dtype", ["eval", "{MODEL}", "--dtype", "float8", "--qa", "{D}/entity_qa.jsonl", "--out", "{OUT}"], "dtype 'float8' is not supported"),
    ("eval-backend", ["eval", "{MODEL}", "--backend", "hooky", "--out", "{OUT}"], "hooky"),
    ("eval-model-missing", ["eval", "{R}/nope_model", "--qa", "{D}/entity_qa.jsonl", "--out", "{OUT}"], "nope_model"),
    ("eval-model-clamp", ["eval", "{CLAMP}", "--qa", "{D}/entity_qa.jsonl", "--oracle", "none", "--out", "{OUT}"], "pass it as --intervention DIR"),
    ("eval-model-no-tokenizer", ["eval", "{R}/no_tokenizer", "--qa", "{D}/entity_qa.jsonl", "--oracle", "none", "--out", "{OUT}"], "has no tokenizer"),
    ("eval-model-no-weights", ["eval", "{R}/no_weights", "--qa", "{D}/entity_qa.jsonl", "--oracle", "none", "--out", "{OUT}"], "has no weights file"),
    ("eval-baseline-missing", ["eval", "{MODEL}", "--qa", "{D}/entity_qa.jsonl", "--oracle", "none", "--baseline", "{R}/nope_base", "--out", "{OUT}"], "--baseline"),
    ("eval-baseline-clamp", ["eval", "{MODEL}", "--qa", "{D}/entity_qa.jsonl", "--oracle", "none", "--baseline", "{CLAMP}", "--out", "{OUT}"], "--baseline"),
    ("eval-oracle-missing", ["eval", "{MODEL}", "--qa", "{D}/entity_qa.jsonl", "--oracle", "{R}/nope_oracle", "--out", "{OUT}"], "--oracle"),
    ("eval-intervention-is-subspace", ["eval", "{MODEL}", "--qa", "{D}/entity_qa.jsonl", "--oracle", "none", "--intervention", "{SUB}", "--out", "{OUT}"], "field 'kind' is 'subspace'"),
    ("eval-subspace-is-selection", ["eval", "{MODEL}", "--qa", "{D}/entity_qa.jsonl", "--oracle", "none", "--subspace", "{SEL}", "--out", "{OUT}"], "field 'kind' is 'selection'"),
    ("eval-config-type", ["eval", "{MODEL}", "--config", "{F}/wrong_type.toml", "--out", "{OUT}"], "[eval] limit"),
    ("eval-config-unknown", ["eval", "{MODEL}", "--config", "{F}/unknown_option.toml", "--out", "{OUT}"], "[eval] has no option 'colour'"),
    ("eval-two-models", ["eval", "{MODEL}", "{MODEL}", "--out", "{OUT}"], "unexpected extra argument"),
]

EXPORT = [
    ("export-no-source", ["export", "--out", "{OUT}"], "Missing argument"),
    ("export-no-out", ["export", "{MODEL}"], "Missing option '--out'"),
    ("export-source-missing", ["export", "{R}/nope_model", "--out", "{OUT}"], "nope_model"),
    ("export-source-selection", ["export", "{SEL}", "--out", "{OUT}"], "export needs a model or an unlearn run"),
    ("export-source-clamp", ["export", "{CLAMP}", "--out", "{OUT}"], "edits no weight"),
    ("export-source-future", ["export", "{R}/future_sel", "--out", "{OUT}"], "written by a newer hookunlearn"),
    ("export-no-tokenizer", ["export", "{R}/no_tokenizer", "--out", "{OUT}"], "tokenizer.json"),
    ("export-no-weights", ["export", "{R}/no_weights", "--out", "{OUT}"], "has no weights file"),
    ("export-bad-config", ["export", "{R}/bad_config", "--out", "{OUT}"], "config.json is not valid JSON"),
    ("export-bos", ["export", "{MODEL}", "--bos", "always", "--out", "{OUT}"], "--bos 'always'"),
    ("export-tolerance-negative", ["export", "{MODEL}", "--tolerance", "-1", "--out", "{OUT}"], "--tolerance -1"),
    ("export-tolerance-nan", ["export", "{MODEL}", "--tolerance", "nan", "--out", "{OUT}"], "--tolerance nan"),
    ("export-out-is-source", ["export", "{R}/no_weights", "--out", "{R}/no_weights", "--force"], "is the input SOURCE"),
    ("export-out-holds-source", ["export", "{R}/no_weights", "--out", "{R}", "--force"], "holds the input SOURCE"),
    ("export-out-exists", ["export", "{MODEL}", "--out", "{EXISTING}"], "already exists"),
    ("export-out-file", ["export", "{MODEL}", "--out", "{F}/plain_file"], "is not a directory"),
    ("export-report-missing", ["export", "{MODEL}", "--report", "{R}/nope_report", "--out", "{OUT}"], "--report"),
    ("export-report-not-report", ["export", "{MODEL}", "--report", "{SEL}", "--out", "{OUT}"], "--report"),
    ("export-processing", ["export", "{MODEL}", "--processing", "fold_everything", "--out", "{OUT}"], "fold_everything"),
    ("export-backend", ["export", "{MODEL}", "--backend", "hooky", "--out", "{OUT}"], "hooky"),
    ("export-config-type", ["export", "{MODEL}", "--config", "{F}/wrong_type.toml", "--out", "{OUT}"], "[export] tolerance"),
    ("export-order", ["export", "--out", "{OUT}", "{MODEL}", "{SEL}"], "unexpected extra argument"),
]

WORLD_AND_OTHERS = [
    ("world-build-out-exists", ["world", "build", "--out", "{EXISTING}"], "already exists"),
    ("world-build-out-file", ["world", "build", "--out", "{F}/plain_file"], "is not a directory"),
    ("world-build-seed", ["world", "build", "--seed", "s", "--out", "{OUT}"], "Invalid value for '--seed'"),
    ("world-build-config-type", ["world", "build", "--config", "{F}/wrong_type.toml", "--out", "{OUT}"], "[world.build] seed"),
    ("world-info-missing", ["world", "info", "--world", "{R}/nope_world", "--no-saes"], "does not exist"),
    ("world-info-selection", ["world", "info", "--world", "{SEL}", "--no-saes"], "field 'kind' is 'selection'"),
    ("world-info-future", ["world", "info", "--world", "{R}/future_sel", "--no-saes"], "written by a newer hookunlearn"),
    ("world-unknown-command", ["world", "rebuild"], "No such command"),
    ("report-missing", ["report", "{R}/nope"], "nope"),
    ("report-not-run", ["report", "{R}/not_a_run"], "not_a_run"),
    ("report-out-exists", ["report", "{SEL}", "--out", "{SEL}/report.html"], "already exists"),
    ("recipes-unknown", ["recipes", "sspu-wrld"], "sspu-wrld"),
    ("demo-out-exists", ["demo", "--out", "{EXISTING}"], "already exists"),
    ("demo-attack-grid", ["demo", "--attack-grid", "huge", "--out", "{OUT}"], "--attack-grid 'huge'"),
    ("demo-methods", ["demo", "--methods", "sspu,forgetit", "--out", "{OUT}"], "forgetit not available"),
    ("demo-stage", ["demo", "--methods", "sspu+armour", "--out", "{OUT}"], "stage 'armour' does not exist"),
    ("demo-steps-0", ["demo", "--steps", "0", "--out", "{OUT}"], "--steps"),
    ("unknown-command", ["unlearnn"], "No such command"),
    ("unknown-root-option", ["--verbose", "select"], "No such option"),
]
# fmt: on

CASES = SELECT + BUILD + UNLEARN + EVAL + EXPORT + WORLD_AND_OTHERS
COMMANDS = {"select": SELECT, "build": BUILD, "unlearn": UNLEARN, "eval": EVAL, "export": EXPORT}


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (except the per-case outputs) -> its content hash."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] != "out"
    }


def check_promise(result, out: Path, root: Path, before: dict[str, str], expected: str) -> None:
    """The catalogue's promise for one failed command (see the module docstring)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert sum(line.startswith("error:") for line in lines) == 1, result.stderr
    assert expected in lines[0], (expected, lines[0])
    assert "force=True" not in lines[0]  # the CLI's words, not the library's
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        result.exception
    )
    assert not out.exists(), f"{out} was left behind"
    left = [p.name for p in out.parent.iterdir() if ".partial" in p.name]
    left += [p.name for p in root.rglob("*.partial*")]
    assert not left, left
    assert _snapshot(root) == before, "an existing output changed"


@pytest.mark.parametrize(("case", "argv", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(place: dict[str, str], case: str, argv: list[str], expected: str) -> None:
    root = Path(place["R"])
    out = root / "out" / case
    before = _snapshot(root)
    args = [arg.format(OUT=out, **place) for arg in argv]
    result = runner.invoke(app, args)
    check_promise(result, out, root, before, expected)


def test_catalogue_covers_every_command_with_tens_of_cases() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)
    for command, cases in COMMANDS.items():
        assert len(cases) >= 20, (command, len(cases))


def test_a_full_disk_during_export_leaves_the_old_output(
    place: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while the weights are written: exit 2, one line, the earlier export untouched."""
    import hookunlearn.export as export_module

    root = Path(place["R"])
    before = _snapshot(root)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "existing" / "model.safetensors"))

    monkeypatch.setattr(export_module, "_save_state_dict", full_disk)
    result = runner.invoke(app, ["export", place["MODEL"], "--out", place["EXISTING"], "--force"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "the disk is full" in result.stderr
    assert "the previous existing is unchanged" in result.stderr
    assert _snapshot(root) == before
    assert not list(root.glob(".existing.partial-*"))
    result = runner.invoke(app, ["export", place["MODEL"], "--out", str(root / "out" / "full")])
    assert result.exit_code == 2 and not (root / "out" / "full").exists()
    assert "no output was left" in result.stderr


def test_a_read_only_output_location(place: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A location the process may not write (simulated: tests run as root, where chmod does not
    stop writes): the staging directory cannot be made; exit 2, nothing left."""
    import tempfile

    root = Path(place["R"])
    before = _snapshot(root)

    def read_only(*args: object, **kwargs: object) -> str:
        raise OSError(errno.EROFS, "Read-only file system", str(root / "out"))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    out = root / "out" / "read_only"
    result = runner.invoke(app, ["build", place["SEL"], "--k", "4", "--out", str(out)])
    check_promise(result, out, root, before, "Read-only file system")


def test_an_sae_made_for_another_model_is_a_warning(place: dict[str, str], tmp_path: Path) -> None:
    """Issue 17 item 10: hook and width fit, but the SAE's cfg.json names another model."""
    sae = tmp_path / "sae"
    shutil.copytree(place["SAE0"], sae)
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg.setdefault("metadata", {})["model_name"] = "gemma-2-2b"
    (sae / "cfg.json").write_text(json.dumps(cfg))
    model = tmp_path / "tiny-lm"  # a checkpoint's directory names it (a dir named "model" says nothing)
    shutil.copytree(place["MODEL"], model)
    args = ["select", "--model", str(model), "--sae", str(sae), "--top-contexts", "0"]
    result = runner.invoke(
        app,
        [
            *args,
            "--forget",
            f"{place['D']}/forget_corpus.jsonl",
            "--retain",
            f"{place['D']}/retain_corpus.jsonl",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings and "trained on 'gemma-2-2b'" in warnings[0] and "'tiny-lm'" in warnings[0], result.stderr


def test_truncated_documents_are_counted(place: dict[str, str], tmp_path: Path) -> None:
    """Issue 17 item 14: a document longer than the context is cut, and the run says so."""
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"text": "the archive of the old tower " * 2000}) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["unlearn", place["SUB"], "--forget", str(long), "--retain", f"{place['D']}/retain_corpus.jsonl"]
        + ["--steps", "1", "--batch-size", "2", "--no-export", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "truncated to the token limit" in result.stdout and "1 forget text(s)" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["truncated_texts"]["forget"] == 1
    sel = tmp_path / "sel"
    result = runner.invoke(
        app,
        ["select", "--model", place["MODEL"], "--sae", place["SAE0"], "--forget", str(long)]
        + ["--retain", f"{place['D']}/retain_corpus.jsonl", "--top-contexts", "0", "--out", str(sel)],
    )
    assert result.exit_code == 0, result.output
    assert "1 forget text(s)" in result.stdout
    manifest = json.loads((sel / "manifest.json").read_text())
    assert manifest["data"]["forget"]["truncated_texts"] == 1
    assert isinstance(manifest["data"]["retain"]["truncated_texts"], int)  # 0 is said too


def test_docs_state_the_catalogue_numbers() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text(encoding="utf-8")
    assert f"**{len(CASES)} cases**" in text and f"**{len(CASES)} of {len(CASES)} pass**" in text
    for command, cases in COMMANDS.items():
        assert f"{command} {len(cases)}" in text, command


def test_every_suite_takes_a_name(place: dict[str, str], tmp_path: Path) -> None:
    """Issue 17 item 17: two suites of one kind on the same data run side by side once named."""
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        ["eval", place["MODEL"], "--oracle", "none", "--limit", "4", "--out", str(out)]
        + ["--suite", f"jailbreak:data={place['D']}/mc_hazard.jsonl,wrappers=roleplay,name=jb_roleplay"]
        + ["--suite", f"jailbreak:data={place['D']}/mc_hazard.jsonl,wrappers=security_audit,name=jb_audit"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert {"jb_roleplay", "jb_audit"} <= set(report["evaluated"]["results"]), report["evaluated"][
        "results"
    ].keys()
