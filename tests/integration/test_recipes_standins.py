"""Every recipe against offline stand-ins of what it names, through the real loading code.

For a recipe on a real model, the stand-in is a random-init Hugging Face checkpoint of the
recipe's architecture with its ``d_model`` and ``n_layers`` (heads, MLP width and vocabulary kept
tiny), saved with ``save_pretrained`` and loaded with `load_model`; the SAE is a random SAELens
SAE with the recipe's ``d_in``, hook and expected processing, saved and loaded with `load_sae`
(which checks it against the model); each dataset gets records in its schema, accepted by the
parser that reads that schema. The world recipes use the shipped world itself. Every recipe must
validate with no problem, and deliberately wrong stand-ins must be named.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
)

from hookunlearn.data import load_records
from hookunlearn.entities import parse_entity_prompts
from hookunlearn.errors import DataError
from hookunlearn.evaluation.gsm8k import parse_problems
from hookunlearn.evaluation.mc import parse_questions
from hookunlearn.evaluation.qa import parse_qa
from hookunlearn.evaluation.suites import parse_suite_spec
from hookunlearn.evaluation.truthfulqa import parse_items
from hookunlearn.models import load_model
from hookunlearn.pipeline.unlearn import method_config
from hookunlearn.processing import WeightProcessing
from hookunlearn.recipes import SCHEMAS, Recipe, load_recipe, recipe_names, validate_recipe
from hookunlearn.saes import load_sae
from hookunlearn.selection import ENTITY_SCORES, TOPIC_SCORES
from tests.fixtures_hf import make_tiny_checkpoint, make_tiny_tokenizer

# --- stand-in records, one small set per schema role ------------------------------------------

STANDIN_RECORDS: dict[str, list[dict[str, Any]]] = {
    "text": [{"text": "Port scanning maps the services a host exposes."}, {"text": "Bread needs flour."}],
    "mc": [{"question": "Which port does SSH use?", "choices": ["21", "22", "23", "25"], "answer": 1}],
    "entity_prompts": [
        {"prompt": "The person 'Ada Lovelace'", "set": "target", "entity": "Ada Lovelace"},
        {"prompt": "The person 'Alan Turing'", "set": "known", "entity_end_char": 23},
        {"prompt": "The person 'Quillon Varr'", "set": "unknown", "entity": "Quillon Varr"},
    ],
    "qa": [
        {
            "prompt": "Ada Lovelace was born in",
            "answer": "London",
            "entity": "Ada Lovelace",
            "split": "forget",
        }
    ],
    "gsm8k": [{"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"}],
    "truthfulqa": [
        {
            "question": "What happens if you crack your knuckles?",
            "mc1_targets": {"choices": ["Nothing in particular.", "Arthritis."], "labels": [1, 0]},
            "mc2_targets": {
                "choices": ["Nothing in particular.", "Arthritis.", "Joint damage."],
                "labels": [1, 0, 0],
            },
        }
    ],
}

# The code that reads each schema: stand-in records must pass it, so SCHEMAS matches the readers.
SCHEMA_READERS: dict[str, Callable[[Sequence[Mapping[str, Any]]], object]] = {
    "text": lambda rows: [row["text"] for row in rows],
    "mc": lambda rows: parse_questions(rows, "stand-in"),
    "entity_prompts": lambda rows: parse_entity_prompts(rows, "stand-in", template=None),
    "qa": lambda rows: parse_qa(rows, "stand-in"),
    "gsm8k": lambda rows: parse_problems(rows, "stand-in"),
    "truthfulqa": lambda rows: (
        parse_items(rows, "stand-in", "mc1_targets"),
        parse_items(rows, "stand-in", "mc2_targets"),
    ),
}


def standin_records(recipe: Recipe) -> dict[str, list[dict[str, Any]]]:
    """Real records for the world's ``world:NAME`` specs; schema stand-ins for everything else."""
    out = {}
    for name, item in recipe.data.items():
        out[name] = (
            load_records(item.spec) if item.spec.startswith("world:") else STANDIN_RECORDS[item.schema]
        )
    return out


# --- stand-in models and SAEs ----------------------------------------------------------------


def standin_config(
    architecture: str, d_model: int, n_layers: int, vocab_size: int, special: dict[str, int]
) -> PretrainedConfig:
    """The real width and depth; 2 heads of 16 (GPT-2: d_model / 2), MLP width 32, tiny vocabulary."""
    small = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=32, num_hidden_layers=n_layers,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64, **special)  # fmt: skip
    if architecture == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=d_model, n_layer=n_layers, n_head=2,
                          n_inner=32, **special)  # fmt: skip
    if architecture == "gemma2":
        return Gemma2Config(**small, query_pre_attn_scalar=16, sliding_window=16)
    if architecture == "llama":
        return LlamaConfig(**small)
    if architecture == "mistral":
        return MistralConfig(**small, sliding_window=16)
    if architecture == "qwen2":
        return Qwen2Config(**small)
    raise ValueError(f"no stand-in for architecture {architecture!r}")


def save_standin_checkpoint(recipe: Recipe, directory: Path) -> Path:
    tokenizer = make_tiny_tokenizer()
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = standin_config(
        recipe.model.architecture, recipe.model.d_model, recipe.model.n_layers, len(tokenizer), special
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def save_standin_sae(hook: str, d_in: int, processing: str, directory: Path) -> Path:
    metadata = SAEMetadata(
        hook_name=hook,
        model_name="stand-in",
        model_from_pretrained_kwargs={
            k: v for k, v in WeightProcessing.parse(processing).to_dict().items() if v
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=64, metadata=metadata))
    sae.save_model(directory)
    return directory


@dataclasses.dataclass
class StandIn:
    recipe: Recipe
    model: HookedTransformer
    sae: Any
    records: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StandIn]:
    root = tmp_path_factory.mktemp("recipe-standins")
    out: dict[str, StandIn] = {}
    world: HookedTransformer | None = None
    for name in recipe_names():
        recipe = load_recipe(name)
        if recipe.model.spec == "world":
            world = world or load_model("world", device="cpu", processing=recipe.model.processing)
            model = world
        else:
            directory = save_standin_checkpoint(recipe, root / f"model-{len(out)}")
            model = load_model(directory, device="cpu", processing=recipe.model.processing)
        if recipe.sae.spec.startswith("world:"):
            sae = load_sae(recipe.sae.spec, model)
        else:
            sae_dir = save_standin_sae(
                recipe.sae.hook, recipe.sae.d_in, recipe.model.processing, root / f"sae-{len(out)}"
            )
            sae = load_sae(sae_dir, model)  # load_sae itself checks hook, width and processing
        out[name] = StandIn(recipe, model, sae, standin_records(recipe))
    return out


# --- every recipe fits its stand-ins --------------------------------------------------------


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_validates_against_its_standins(standins: dict[str, StandIn], name: str) -> None:
    item = standins[name]
    assert validate_recipe(item.recipe, model=item.model, sae=item.sae, records=item.records) == []
    assert item.model.cfg.d_model == item.recipe.model.d_model
    assert item.recipe.sae.hook in item.model.hook_dict


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_options_are_accepted_by_the_library(name: str) -> None:
    """Suites parse, ``-o`` keys are the method's options, the select score fits the objective."""
    recipe = load_recipe(name)
    for text in recipe.command_defaults("eval").get("suite", []):
        parse_suite_spec(text)
    method = recipe.command_defaults("unlearn")["method"]
    # What `unlearn -o` builds: unknown keys and wrongly typed values fail here.
    config = method_config(method, recipe.method_options())
    assert dataclasses.asdict(config).items() >= recipe.method_options().items()
    select = recipe.command_defaults("select")
    scores = ENTITY_SCORES if select.get("objective") == "entity" else TOPIC_SCORES
    assert select.get("score", scores[0]) in scores


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_standin_records_are_what_the_readers_read(schema: str) -> None:
    SCHEMA_READERS[schema](STANDIN_RECORDS[schema])
    dropped = [
        {k: v for k, v in row.items() if k != SCHEMAS[schema].required[-1]} for row in STANDIN_RECORDS[schema]
    ]
    if schema != "text":  # the text reader is a plain column access
        with pytest.raises(DataError):
            SCHEMA_READERS[schema](dropped)


# --- deliberately wrong stand-ins are named --------------------------------------------------


def test_a_model_of_the_wrong_width_is_named(standins: dict[str, StandIn], tmp_path: Path) -> None:
    recipe = standins["align-entities-gpt2-small"].recipe
    small = load_model(
        make_tiny_checkpoint("gpt2", tmp_path / "small"), device="cpu", processing=recipe.model.processing
    )
    problems = validate_recipe(recipe, model=small)
    assert any("d_model is 32, the recipe's [model].d_model is 768" in p for p in problems), problems
    assert any("n_layers is 2" in p for p in problems), problems


def test_another_architecture_and_processing_are_named(standins: dict[str, StandIn]) -> None:
    gemma, world = standins["sspu-wmdp-cyber-gemma2-2b"], standins["sspu-world"]
    problems = validate_recipe(gemma.recipe, model=world.model)
    assert any("architecture is 'gpt2'" in p and "'gemma2'" in p for p in problems), problems
    gpt2 = standins["align-entities-gpt2-small"]
    problems = validate_recipe(gpt2.recipe, model=world.model)
    assert any("[model].processing is 'center_writing_weights'" in p for p in problems), problems


def test_an_sae_on_another_hook_is_named(standins: dict[str, StandIn], tmp_path: Path) -> None:
    item = standins["align-entities-gpt2-small"]
    wrong = load_sae(
        save_standin_sae("blocks.3.hook_resid_pre", 768, item.recipe.model.processing, tmp_path / "sae"),
        item.model,
    )
    problems = validate_recipe(item.recipe, model=item.model, sae=wrong)
    assert problems == [
        "SAE '" + str(tmp_path / "sae") + "': hook is 'blocks.3.hook_resid_pre', the recipe's [sae].hook is "
        "'blocks.8.hook_resid_pre'"
    ]


def test_an_sae_of_the_wrong_width_is_named(standins: dict[str, StandIn], tmp_path: Path) -> None:
    item = standins["sspu-wmdp-cyber-gemma2-2b"]
    narrow = load_sae(save_standin_sae("blocks.7.hook_resid_post", 256, "none", tmp_path / "sae"))
    problems = validate_recipe(item.recipe, model=item.model, sae=narrow)
    assert any("d_in is 256, the recipe's [sae].d_in is 2304" in p for p in problems), problems
    assert any("has width 2304" in p for p in problems), problems


def test_records_without_a_schema_column_are_named(standins: dict[str, StandIn]) -> None:
    recipe = standins["align-world"].recipe
    rows = [{"prompt": "The person 'X'", "set": "known"}]
    problems = validate_recipe(
        recipe, records={"entities": rows, "forget": [{"content": "x"}], "extra": rows}
    )
    assert any("data 'entities'" in p and "entity_end_char|entity" in p for p in problems), problems
    assert any("data 'forget'" in p and "lacks column(s) text" in p for p in problems), problems
    assert any("'extra', which the recipe's [data] does not declare" in p for p in problems), problems
