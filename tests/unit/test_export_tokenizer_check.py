"""Export verification covers the tokenizer (issue 17 item 1): a written tokenizer that lost its
vocabulary encodes the probe texts identically to the model's (both are the same broken one), so
verification also encodes each probe text and decodes it back."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hookunlearn.export import DEFAULT_PROBE_TEXTS, ExportError, _check_tokenizer


def _one_token_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def test_a_vocabulary_less_tokenizer_fails_verification(tmp_path: Path) -> None:
    broken = _one_token_tokenizer()
    broken.save_pretrained(tmp_path)
    with pytest.raises(ExportError, match="does not round-trip"):
        _check_tokenizer(tmp_path, broken, list(DEFAULT_PROBE_TEXTS), "export")


def test_no_tokenizer_files_is_an_error_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="tokenizer.json, tokenizer_config.json"):
        _check_tokenizer(tmp_path, _one_token_tokenizer(), list(DEFAULT_PROBE_TEXTS), "export")
