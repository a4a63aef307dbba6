"""Library-level checks behind the bad-input catalogue (issue 17): each raises a
`HookunlearnError` naming the input, what is wrong and what to do."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hookunlearn.artifacts import Manifest, check_can_write, check_compatible, check_not_input
from hookunlearn.data import load_texts
from hookunlearn.errors import ArtifactError, DataError, HookunlearnError, IncompatibleArtifactError
from hookunlearn.options import config_from_options
from hookunlearn.train import TrainConfig, _resume_mismatch


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", math.nan, "--lr nan"),
        ("lr", math.inf, "--lr inf"),
        ("lr", -1.0, "--lr -1.0"),
        ("grad_clip", math.nan, "--grad-clip nan"),
        ("grad_clip", -1.0, "--grad-clip -1.0"),
        ("steps", 0, "--steps 0"),
        ("grad_accum", 0, "--grad-accum 0"),
        ("warmup_steps", -1, "--warmup-steps -1"),
        ("weight_decay", math.nan, "weight_decay nan"),
    ],
)
def test_train_config_refuses_values_that_change_behaviour_silently(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(HookunlearnError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{field: value})


def test_an_unknown_schedule_is_refused() -> None:
    """The CLI passes --schedule as text; the config refuses a name it does not know (outside the
    type-checking import hook, which would refuse it first)."""
    from hookunlearn.train import SCHEDULES

    assert SCHEDULES == ("constant", "cosine", "linear")
    config = TrainConfig()
    object.__setattr__(config, "schedule", "wavy")
    with pytest.raises(HookunlearnError, match="--schedule 'wavy': choose one of constant, cosine, linear"):
        config.__post_init__()


def test_literal_options_are_checked() -> None:
    from hookunlearn.objectives.sspu import SSPUConfig

    with pytest.raises(HookunlearnError, match="regularizer: 'foo' is not one of 'soft', 'hard', 'none'"):
        config_from_options(SSPUConfig, {"regularizer": "foo"}, "method 'sspu'")
    with pytest.raises(HookunlearnError, match="steering_coeff: 'abc' is not a number"):
        config_from_options(SSPUConfig, {"steering_coeff": "abc"}, "method 'sspu'")


def test_resume_mismatch_lists_each_field() -> None:
    stored = {
        "lr": 0.005,
        "steps": 60,
        "schedule": "constant",
        "trainable": ["mlp.W_out"],
        "checkpoint_every": 10,
    }
    given = {
        "lr": 0.05,
        "steps": 120,
        "schedule": "constant",
        "trainable": ("mlp.W_out",),
        "checkpoint_every": 5,
    }
    assert _resume_mismatch(stored, given) == [
        "lr: checkpoint 0.005, now 0.05"
    ]  # more steps, same rate: fine
    cosine = {**stored, "schedule": "cosine"}
    assert "steps: checkpoint 60, now 120" in _resume_mismatch(cosine, {**given, "schedule": "cosine"})


def test_non_utf8_data_names_the_file_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl: not UTF-8 text \(byte 0xff at offset 25, line 2\)"):
        load_texts(path)


def test_output_checks(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    with pytest.raises(ArtifactError) as info:
        check_can_write(tmp_path / "existing")
    assert "pass --force to replace it" in str(info.value) and "force=True" not in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="is a file, not a directory"):
        check_can_write(tmp_path / "file" / "out")
    with pytest.raises(ArtifactError, match="is the input SELECTION_DIR"):
        check_not_input(tmp_path / "existing", {"SELECTION_DIR": tmp_path / "existing"})
    with pytest.raises(ArtifactError, match="holds the input SOURCE"):
        check_not_input(tmp_path, {"SOURCE": tmp_path / "existing"})
    check_not_input(tmp_path / "new", {"SOURCE": tmp_path / "existing", "--model": "world"})


def test_two_models_of_one_name_are_told_apart() -> None:
    manifest = Manifest(kind="selection", command="x", model={"spec": "world", "config_fingerprint": "a"})
    with pytest.raises(
        IncompatibleArtifactError, match="both are called 'world', but they are different models"
    ):
        check_compatible(manifest, model={"spec": "world", "config_fingerprint": "b"}, source="selection s")
