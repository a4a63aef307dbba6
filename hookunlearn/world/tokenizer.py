"""The world's tokenizer: GPT-2-style byte-level BPE trained on the world's own text.

It is trained on `World.tokenizer_corpus`, where every person name is replaced by a fresh random
name, so a name's tokens are syllable pieces: no whole name part of a known or unknown person is
a single token, and known and unknown names have the same token-length distribution (both are
checked after training). ``<|endoftext|>`` is the one special token and serves as BOS, EOS, UNK
and PAD. The trainer packs units with BOS between them (encoding with ``add_special_tokens=False``);
the tokenizer saved with a world model prepends BOS with its defaults (a post-processor, see
`hookunlearn.hf_files`), so every client feeds the model what it was trained on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hookunlearn.errors import HookunlearnError
from hookunlearn.world.generator import World, WorldInvariantError

SPECIAL_TOKEN = "<|endoftext|>"
"""BOS = EOS = UNK = PAD, id 0."""

DEFAULT_VOCAB_SIZE = 1536
MIN_VOCAB_SIZE = 300
BYTE_LEVEL_SPACE = "\u0120"
"""How GPT-2's byte-level alphabet spells a space ("Ġ") inside token strings."""


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` (GPT-2 style, no prefix space) trained on ``texts``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def drop_merges_creating(tokenizer: Tokenizer, forbidden: Iterable[str]) -> Tokenizer:
    """The same BPE cut just before the first merge whose result is one of ``forbidden``
    (byte-level token strings, e.g. ``"ĠRosmel"``): what training would give with that smaller
    vocabulary. Returns ``tokenizer`` itself when no merge creates a forbidden token."""
    state = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    merges: list[list[str]] = state["model"]["merges"]
    forbidden_set = set(forbidden)
    cut = next((i for i, (left, right) in enumerate(merges) if left + right in forbidden_set), None)
    if cut is None:
        return tokenizer
    # ids are the specials, the bytes, then one per new merged token in order of creation
    first_merged_id = len(vocab) - len({left + right for left, right in merges})
    n_keep = max((vocab[left + right] + 1 for left, right in merges[:cut]), default=first_merged_id)
    state["model"]["vocab"] = {token: index for token, index in vocab.items() if index < n_keep}
    state["model"]["merges"] = merges[:cut]
    return Tokenizer.from_str(json.dumps(state))


def _name_part_tokens(world: World) -> list[str]:
    """Every known and unknown name part as a byte-level token string, with and without space."""
    parts = {part for person in world.people for part in (person.first_name, person.last_name)}
    return sorted({form for part in parts for form in (part, BYTE_LEVEL_SPACE + part)})


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The `transformers` tokenizer around a trained BPE, with ``<|endoftext|>`` as every special."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
    )


@dataclass(frozen=True)
class NameTokenStats:
    """How person names tokenize (names as they occur mid-sentence, with a leading space)."""

    known_lengths: dict[int, int]
    """Histogram: tokens in " First Last" -> number of known people."""
    unknown_lengths: dict[int, int]
    """Same for unknown people."""
    single_token_parts: list[str]
    """Name parts (" First", "First", " Last") that are one token; must be empty."""

    @property
    def mean_known(self) -> float:
        return _mean(self.known_lengths)

    @property
    def mean_unknown(self) -> float:
        return _mean(self.unknown_lengths)


def _mean(histogram: dict[int, int]) -> float:
    total = sum(histogram.values())
    return sum(length * count for length, count in histogram.items()) / total if total else 0.0


def name_token_stats(tokenizer: PreTrainedTokenizerBase, world: World) -> NameTokenStats:
    """Token-length histograms of known and unknown names, and any name part that is one token.

    First names are checked with and without a leading space (a biography starts with one)."""

    def n_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    lengths: dict[bool, Counter[int]] = {True: Counter(), False: Counter()}
    single: list[str] = []
    for person in world.people:
        lengths[person.known][n_tokens(" " + person.name)] += 1
        for part in (" " + person.first_name, person.first_name, " " + person.last_name):
            if n_tokens(part) < 2:
                single.append(part)
    return NameTokenStats(
        known_lengths=dict(sorted(lengths[True].items())),
        unknown_lengths=dict(sorted(lengths[False].items())),
        single_token_parts=sorted(set(single)),
    )


def train_tokenizer(world: World, out_dir: Path, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Train the world's tokenizer and ``save_pretrained`` it into ``out_dir`` (returned).

    The vocabulary has ``vocab_size`` tokens, or fewer when the world's text is too small for it:
    BPE would then merge whole name parts (its other words are used up), so training is cut
    before the first merge that makes a known or unknown name part one token (the default world
    at 1,536 needs no cut; `WorldConfig.quick` gets ~1,400). Deterministic: the same world gives
    a byte-identical ``tokenizer.json``."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise HookunlearnError(
            f"train_tokenizer: vocab_size={vocab_size} is below {MIN_VOCAB_SIZE} (1 special token + 256 bytes "
            "+ some merges); pass a larger vocab_size."
        )
    bpe = drop_merges_creating(train_bpe(world.tokenizer_corpus(), vocab_size), _name_part_tokens(world))
    tokenizer = wrap_tokenizer(bpe)
    stats = name_token_stats(tokenizer, world)
    if stats.single_token_parts:
        raise WorldInvariantError(
            f"train_tokenizer: name parts are single tokens: {stats.single_token_parts[:5]}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
