"""The top-k context collector (bounded memory, the same top k as brute force, the right
windows), the direct logit effects, and the Neuronpedia lookup (offline, from SAELens's data)."""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from hookunlearn.html_report import latent_activity, svg_bars
from hookunlearn.interpret import (
    TopContexts,
    direct_logit_effects,
    final_norm,
    neuronpedia_id,
    neuronpedia_url,
    top_tokens,
)


def _stream(seed: int, batches: int, d_sae: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches of (tokens, mask, codes): ragged documents, sparse positive codes, no ties."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        lengths = torch.randint(3, 12, (4,), generator=generator)
        width = int(lengths.max()) + 1
        tokens = torch.randint(0, 50, (4, width), generator=generator)
        mask = torch.zeros(4, width, dtype=torch.bool)
        for row, length in enumerate(lengths.tolist()):
            mask[row, 1 : 1 + length] = True  # position 0 is BOS
        n = int(mask.sum())
        codes = torch.rand(n, d_sae, generator=generator) * (torch.rand(n, d_sae, generator=generator) < 0.3)
        out.append((tokens, mask, codes))
    return out


def test_top_contexts_match_brute_force_and_memory_stays_flat() -> None:
    d_sae, k, left, right = 6, 3, 2, 1
    collector = TopContexts.empty(d_sae, k, left, right)
    size = collector.nbytes()
    seen: dict[int, list[tuple[float, int, int, str]]] = {j: [] for j in range(d_sae)}
    documents: dict[tuple[str, int], tuple[list[int], list[bool]]] = {}
    docs = 0
    for index, (tokens, mask, codes) in enumerate(_stream(0, 12, d_sae)):
        role = "forget" if index % 2 == 0 else "retain"
        doc_ids = torch.arange(docs, docs + tokens.shape[0])
        role_ids = torch.full((tokens.shape[0],), collector.role_id(role))
        collector.add(codes, tokens, mask, mask, doc_ids, role_ids)
        where = mask.nonzero().tolist()
        for (row, pos), code in zip(where, codes, strict=True):
            for j in range(d_sae):
                if code[j] > 0:
                    seen[j].append((float(code[j]), docs + row, pos, role))
        for row in range(tokens.shape[0]):
            documents[(role, docs + row)] = (tokens[row].tolist(), mask[row].tolist())
        docs += tokens.shape[0]
        assert collector.nbytes() == size  # bounded: nothing grows with the data

    for j in range(d_sae):
        expected = sorted(seen[j], reverse=True)[:k]
        got = collector.records(j, lambda ids: [str(i) for i in ids])
        assert [(r["doc"], r["pos"], r["role"]) for r in got] == [e[1:] for e in expected]
        assert [r["activation"] for r in got] == pytest.approx([e[0] for e in expected])
        for record in got:
            ids, real = documents[(record["role"], record["doc"])]
            pos = record["pos"]
            window = [
                str(ids[p]) for p in range(pos - left, pos + right + 1) if 0 <= p < len(ids) and real[p]
            ]
            assert record["tokens"] == window
            assert record["tokens"][record["center"]] == str(ids[pos])
            assert record["acts"][record["center"]] == pytest.approx(record["activation"], abs=1e-5)


def test_top_contexts_of_single_positions_leave_other_tokens_unencoded() -> None:
    """Entity prompts: one coded position per row, the window shows the prompt before it."""
    collector = TopContexts.empty(2, k=2, left=3, right=2)
    tokens = torch.tensor([[0, 5, 6, 7, 8], [0, 9, 10, 0, 0]])
    visible = torch.tensor([[False, True, True, True, True], [False, True, True, False, False]])
    coded = torch.zeros_like(visible)
    coded[0, 3] = coded[1, 2] = True
    codes = torch.tensor([[1.0, 0.0], [2.0, 0.5]])
    collector.add(codes, tokens, coded, visible, torch.tensor([0, 1]), torch.tensor([0, 0]).long())
    collector.roles.append("target")
    first, second = collector.records(0, lambda ids: [str(i) for i in ids])
    assert (first["activation"], first["tokens"], first["center"]) == (2.0, ["9", "10"], 1)
    assert first["acts"] == [None, 2.0]
    assert (second["tokens"], second["center"]) == (["5", "6", "7", "8"], 2)
    assert [r["doc"] for r in collector.records(1, lambda ids: [str(i) for i in ids])] == [1]


def test_top_contexts_refuse_a_bad_size() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        TopContexts.empty(4, k=0)


def _tiny_model(normalization: str) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_vocab=11, act_fn="gelu",
        normalization_type=normalization, seed=0,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    with torch.no_grad():
        model.ln_final.w.uniform_(0.5, 1.5)
        if hasattr(model.ln_final, "b"):
            model.ln_final.b.uniform_(-0.2, 0.2)
    return model


def test_direct_logit_effects_are_the_final_norm_and_unembedding_of_the_direction() -> None:
    model = _tiny_model("LN")
    directions = torch.randn(3, 8)
    weight, center, note = final_norm(model)
    assert center and weight is not None and "gain applied" in note
    effects = direct_logit_effects(directions, model.W_U, weight, center=center)
    # LayerNorm(d) = centre(d) / scale * w + b: the effect is the logit change up to the positive 1/scale
    with torch.no_grad():
        normed = model.ln_final(directions[:, None, :])[:, 0]
        scale = (
            (directions - directions.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
        )
        expected = (normed - model.ln_final.b) * scale @ model.W_U
    torch.testing.assert_close(effects, expected, rtol=1e-4, atol=1e-5)


def test_direct_logit_effects_agree_when_the_norm_is_folded() -> None:
    model = _tiny_model("LN")
    folded = HookedTransformer(model.cfg)
    folded.load_and_process_state_dict(
        model.state_dict(), fold_ln=True, center_writing_weights=False, center_unembed=False
    )
    weight, center, note = final_norm(folded)
    assert weight is None and center and "folded" in note
    directions = torch.randn(4, 8)
    unfolded = direct_logit_effects(directions, model.W_U, model.ln_final.w, center=True)
    torch.testing.assert_close(direct_logit_effects(directions, folded.W_U, None, center=center), unfolded)


def test_rms_norm_is_not_centred_and_top_tokens_are_ordered() -> None:
    _, center, _ = final_norm(_tiny_model("RMS"))
    assert not center
    effects = torch.tensor([0.5, -2.0, 3.0, 0.0, -1.0])
    listed = top_tokens(effects, 2, lambda ids: [f"t{i}" for i in ids])
    assert listed == {"top": [["t2", 3.0], ["t0", 0.5]], "bottom": [["t1", -2.0], ["t4", -1.0]]}


def test_neuronpedia_ids_come_from_saelens_directory_offline() -> None:
    release = {"source": "release", "release": "gpt2-small-res-jb", "sae_id": "blocks.3.hook_resid_pre"}
    assert neuronpedia_id(release) == "gpt2-small/3-res-jb"
    assert (
        neuronpedia_url("gpt2-small/3-res-jb", 874) == "https://www.neuronpedia.org/gpt2-small/3-res-jb/874"
    )
    assert neuronpedia_id({"source": "local", "release": None, "sae_id": None, "spec": "world:2"}) is None
    assert neuronpedia_id({**release, "sae_id": "no-such-id"}) is None
    assert neuronpedia_url(None, 3) is None


def test_latent_activity_is_read_from_the_eval_report_json() -> None:
    def side(forget: float, retain: float) -> dict:
        metrics = {"latent_activity[forget]": forget, "latent_activity[retain]": retain}
        details = {"latents": [4, 7], "hook": "blocks.1.hook_resid_post"}
        return {"model": {}, "results": {"probe": {"suite": "probe", "metrics": metrics, "details": details}}}

    report = {"evaluated": side(0.1, 0.5), "baseline": side(0.9, 0.5), "oracle": None}
    found = latent_activity(report)
    assert found is not None and found["latents"] == [4, 7]
    assert found["activity"] == {
        "base": {"forget": 0.9, "retain": 0.5},
        "unlearned": {"forget": 0.1, "retain": 0.5},
    }
    assert latent_activity({"evaluated": {"results": {}}}) is None
    svg = svg_bars(["a", "b"], {"x": [1.0, math.nan], "y": [-0.5, None]}, title="t")
    assert svg.startswith("<svg") and svg.count("<rect") == 2 + 2  # two bars, two legend keys


def test_a_page_that_cannot_render_never_costs_the_run(tmp_path, monkeypatch) -> None:
    import hookunlearn.html_report as html_report

    def broken(run_dir):
        raise KeyError("layer_scores")

    monkeypatch.setattr(html_report, "render_run", broken)
    with pytest.raises(KeyError):
        html_report.write_html_report(tmp_path)
    page = html_report.write_html_report(tmp_path, fallback=True).read_text()
    assert "could not render" in page and "layer_scores" in page and "hookunlearn report" in page
    assert not list(tmp_path.glob(".*partial"))


def test_each_latent_before_and_after_is_tabled_most_active_first() -> None:
    from hookunlearn.html_report import _per_latent_rows

    def side(forget: dict, retain: dict) -> dict:
        details = {
            "latents": [4, 7],
            "hook": "blocks.1.hook_resid_post",
            "latent_activity_per_latent": {"forget": forget, "retain": retain},
        }
        metrics = {"latent_activity[forget]": 0.0, "latent_activity[retain]": 0.0}
        return {"model": {}, "results": {"probe": {"suite": "probe", "metrics": metrics, "details": details}}}

    report = {
        "evaluated": side({"4": 0.1, "7": 0.2}, {"4": 0.5, "7": 0.4}),
        "baseline": side({"4": 0.3, "7": 0.9}, {"4": 0.5, "7": 0.5}),
        "oracle": None,
    }
    rows = _per_latent_rows(latent_activity(report), 10)
    assert [row[0] for row in rows] == ["7", "4"]  # most active on the base model first
    latent, base, after, oracle, change, retain_change = rows[0]
    assert (base, after, oracle) == (0.9, 0.2, None)
    assert change == pytest.approx(-0.7) and retain_change == pytest.approx(-0.1)
