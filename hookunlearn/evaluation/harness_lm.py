"""A hookunlearn model as an lm-evaluation-harness ``LM``: the harness scores our HookedTransformer.

lm-evaluation-harness (0.4.x) builds requests from its task YAMLs and asks an ``LM`` for
log-likelihoods, rolling log-likelihoods and greedy generations. `HookunlearnLM` answers them
with a `HookedTransformer`, so whatever hooks are on the model are scored by the harness: a
*conditional* SAE clamp (`hookunlearn.interventions.clamp`), which the harness's own ``steered``
model cannot express (it adds or clamps one direction at every position), or an unlearned model
before export.

Tokenisation follows the harness's ``HFLM`` with a tokenizer that prepends BOS with its defaults
(what `hookunlearn.export` writes): every encoding starts with BOS when the model's
``default_prepend_bos`` is set, contexts and continuations are split as the harness's
``_encode_pair`` does, and the empty-context prefix is BOS. So for an exported checkpoint,
``HFLM(pretrained=export)`` and ``HookunlearnLM(model)`` see the same tokens (a test pins the
per-item log-likelihoods). Importing this module registers the model as ``hookunlearn`` with the
harness::

    import lm_eval, hookunlearn.evaluation.harness_lm
    lm_eval.simple_evaluate(model="hookunlearn", model_args="pretrained=world,intervention=runs/clamp",
                            tasks=["my_task"], task_manager=lm_eval.tasks.TaskManager(include_path="tasks/"))

This module imports ``lm_eval``; install it with ``pip install 'hookunlearn[lm-eval]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import lm_eval.models  # noqa: F401  # the harness's own models first: its registry loads them only while empty
import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from hookunlearn.backends import backend_name
from hookunlearn.backends.types import LanguageModel
from hookunlearn.evaluation.gsm8k import generate_greedy
from hookunlearn.evaluation.scoring import EncodedPair, score_pairs

__all__ = ["HookunlearnLM"]

DEFAULT_MAX_GEN_TOKS = 256


@register_model("hookunlearn")
class HookunlearnLM(TemplateLM):
    """lm-evaluation-harness ``LM`` over a `HookedTransformer` (hooks included).

    Build it from a loaded model (``HookunlearnLM(model)``), or let the harness build it from
    ``model_args`` (``pretrained=SPEC``, optional ``intervention=DIR``, ``device``, ``dtype``,
    ``processing``, ``batch_size``): any spec `hookunlearn.models.load_model` takes."""

    def __init__(
        self,
        model: LanguageModel | None = None,
        *,
        pretrained: str | None = None,
        intervention: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        processing: str = "none",
        batch_size: int | str = 16,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:  # a misspelt model_args key (interventon=...) must not be dropped silently
            raise ValueError(
                f"HookunlearnLM: unknown model_args {', '.join(sorted(unknown))}; it takes pretrained, "
                "intervention, device, dtype, processing, batch_size, max_gen_toks"
            )
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"HookunlearnLM: batch_size={batch_size!r}; give a positive number (no 'auto')")
        del max_batch_size  # the harness passes it with batch_size; only 'auto' would use it
        self._stack = contextlib.ExitStack()
        if model is None:
            if pretrained is None:
                raise ValueError("HookunlearnLM needs a model or model_args pretrained=SPEC")
            from hookunlearn.models import load_model

            model = load_model(pretrained, device=device, dtype=dtype, processing=processing)
            if intervention is not None:
                from hookunlearn.interventions import load_intervention

                self._stack.enter_context(load_intervention(intervention).applied(model))
        if model.tokenizer is None:
            raise ValueError("HookunlearnLM needs a model with a tokenizer")
        self.model = model
        self.tokenizer = model.tokenizer
        self.batch_size = int(batch_size)
        self.max_gen_toks = int(max_gen_toks)

    def close(self) -> None:
        """Remove the hooks this object put on the model (an ``intervention=`` it loaded)."""
        self._stack.close()

    # --- tokenisation --------------------------------------------------------------------

    @property
    def _bos(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [int(bos)] if self.model.cfg.default_prepend_bos and bos is not None else []

    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos if eos is not None else self.tokenizer.bos_token_id)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return int(self.model.cfg.n_ctx)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        ids = list(self.tokenizer(string, add_special_tokens=False)["input_ids"])
        bos = self._bos
        starts_with_bos = (
            bool(bos) and self.tokenizer.bos_token is not None and string.startswith(self.tokenizer.bos_token)
        )
        add = add_special_tokens if add_special_tokens is not None else not starts_with_bos
        return bos + ids if add else ids

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=False))

    # --- scoring -------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **kwargs: Any
    ) -> list[tuple[float, bool]]:
        pairs = []
        for _key, context, continuation in requests:
            # left-truncate as the harness does: the last max_length + 1 tokens
            whole = (list(context) + list(continuation))[-(self.max_length + 1) :]
            n_cont = min(len(continuation), len(whole) - 1)
            pairs.append(
                EncodedPair(tuple(whole[: len(whole) - n_cont]), tuple(whole[len(whole) - n_cont :]))
            )
        scores = score_pairs(self.model, pairs, batch_size=self.batch_size)
        return [(score.logprob, score.greedy) for score in scores]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Each string's log-likelihood over the harness's disjoint rolling windows; the windows of
        all requests are scored together (one `score_pairs` call), then summed per request. The
        string is encoded as the harness's ``hf`` model encodes it (``tok_encode`` with the
        tokenizer's defaults: BOS in front when the model takes one, so the first window scores
        it after the prefix token, as ``hf`` does on an export)."""
        windows, owners = [], []
        for index, request in enumerate(requests):
            (string,) = request.args
            for context, target in lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                context, target = lm_utils.make_disjoint_window((context, target))
                windows.append((("", ""), list(context), list(target)))
                owners.append(index)
        out = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows), strict=True):
            out[owner] += logprob
        return out

    @torch.no_grad()
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy generations, batched (``batch_size`` prompts at a time, longest first) with a
        key-value cache: the gsm8k suite's generator (`hookunlearn.evaluation.gsm8k.generate_greedy`).
        Requests with the same stop strings and token budget run together; each context keeps its
        last ``max_length - max_gen_toks`` tokens, as the harness's ``hf`` model keeps them (a
        ``max_gen_toks`` of the context length or more is cut to one less, where ``hf`` fails).
        Texts are decoded without special tokens, as ``hf`` decodes them."""
        groups: dict[tuple[tuple[str, ...], int], list[tuple[int, str]]] = {}
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            kwargs = dict(gen_kwargs or {})
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0.0:
                raise ValueError(
                    f"HookunlearnLM generates greedily; the task asks for sampling ({kwargs}). Use the "
                    "harness's hf model on an export for sampled generation."
                )
            until = kwargs.get("until") or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = min(int(kwargs.get("max_gen_toks", self.max_gen_toks)), self.max_length - 1)
            groups.setdefault((tuple(until), max_new), []).append((index, context))
        out = [""] * len(requests)
        for (until, max_new), members in groups.items():
            budget = self.max_length - max_new
            prompts = [self.tok_encode(context)[-budget:] or [self.prefix_token_id] for _, context in members]
            if backend_name(self.model) == "hooked":
                texts = generate_greedy(
                    self.model,
                    prompts,
                    max_new_tokens=max_new,
                    stop_sequences=until,
                    batch_size=self.batch_size,
                )
            else:  # the bridge has no TransformerLens key-value cache: one full forward per token
                texts = [self._greedy(prompt, max_new, list(until)) for prompt in prompts]
            for (index, _), text in zip(members, texts, strict=True):
                out[index] = text
        return out

    def _greedy(self, tokens: list[int], max_new: int, until: list[str]) -> str:
        generated: list[int] = []
        for _ in range(max_new):
            window = (tokens + generated)[-self.max_length :]
            logits = self.model(torch.tensor([window], device=self.model.cfg.device), return_type="logits")
            next_id = int(logits[0, -1].argmax())
            if next_id == self.eot_token_id:
                break
            generated.append(next_id)
            text = self.tok_decode(generated)
            if any(stop in text for stop in until):
                break
        text = self.tok_decode(generated)
        for stop in until:
            text = text.split(stop)[0]
        return text


@contextlib.contextmanager
def harness_model(model: LanguageModel, batch_size: int = 16) -> Iterator[HookunlearnLM]:
    """``with harness_model(model) as lm: lm_eval.simple_evaluate(model=lm, ...)``."""
    lm = HookunlearnLM(model, batch_size=batch_size)
    try:
        yield lm
    finally:
        lm.close()
