"""Write the notebooks of this folder from the cells below, so that they are reviewed as code.

    python notebooks/_build.py          # (re)write 01_quickstart.ipynb, 02_..., 03_...
    python notebooks/_build.py --check  # exit 1 if a committed notebook differs from this file

Edit this file, never the .ipynb files; they are committed without outputs. Cell ids are fixed
(``cell-00``, ...) so that re-running the script changes nothing unless a cell did.
``tests/notebooks/test_notebooks.py`` checks that the committed notebooks match and execute.
"""

from __future__ import annotations

import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(dedent(text).strip())


# ---------------------------------------------------------------------------------------------
# 01: the quickstart
# ---------------------------------------------------------------------------------------------

QUICKSTART = [
    md(
        """
        # Quickstart: forget a hazardous topic with SSPU, through the library API

        This notebook runs the whole flow on the **embedded world**: a seeded fictitious world (people
        with facts, a hazardous and a benign knowledge domain), a 4-layer GPT-2-architecture model
        trained on it, and one SAELens SAE per layer, all shipped in the package (`docs/world.md`).

        1. **select**: which layer, and which SAE latents, carry the hazardous domain (forget corpus
           vs retain corpus);
        2. **build**: orthonormal bases of those latents' decoder directions (`U_rel`) and of the
           least forget-related latents (`U_irr`);
        3. **unlearn** with **SSPU**: steer the forget text's residual towards a fixed vector in
           `U_irr`, keep the retain text's residual as it was, and keep the weight update inside
           `U_rel`;
        4. **evaluate** with the suite framework: hazardous and benign multiple choice, entity QA
           recall, perplexity; base vs unlearned.

        Each step is one function call that returns a typed result you can inspect; the CLI
        (`hookunlearn select / build / unlearn / eval`) runs the same functions. About a minute on a
        laptop CPU.

        Two environment variables exist so that the tests can run this notebook on a tiny world:
        `HOOKUNLEARN_WORLD` (a directory from `hookunlearn world build`; default: the shipped world)
        and `HOOKUNLEARN_STEPS` (unlearning steps; default 300, the tuned budget).
        """
    ),
    code(
        """
        import os

        import matplotlib.pyplot as plt

        from hookunlearn.world.assets import world_dir

        STEPS = int(os.environ.get("HOOKUNLEARN_STEPS", "300"))
        K = 32  # latents per subspace: the default of `build`, chosen by the sweep in docs/methods.md
        print(f"world: {world_dir()}\\nunlearning steps: {STEPS}")
        """
    ),
    md(
        """
        ## 1. The model and its SAEs

        `load_model("world")` returns a TransformerLens `HookedTransformer` with raw (unprocessed)
        weights, the convention SAELens trains SAEs on. `load_sae("world:L", model)` loads the SAE on
        `blocks.L.hook_resid_post` and checks that it fits the model (hook, width, weight
        processing) before anything runs.
        """
    ),
    code(
        """
        from hookunlearn.models import load_model
        from hookunlearn.saes import load_sae

        base = load_model("world", device="cpu")
        saes = [load_sae(f"world:{layer}", base) for layer in range(base.cfg.n_layers)]
        print(f"{base.cfg.n_layers} layers, d_model {base.cfg.d_model}; SAE widths {[s.cfg.d_sae for s in saes]}")
        """
    ),
    md(
        """
        ## 2. Select: where does the hazardous domain live?

        The forget corpus states the hazardous domain's facts; the retain corpus holds benign facts,
        biographies and general text. `select` streams each corpus through the model once, encodes
        every layer's residual with that layer's SAE, and scores each latent by `mean_diff` (its
        mean activation on forget tokens minus on retain tokens). The chosen layer is the one whose
        10 best latents separate the corpora best (difference of firing rates, comparable across
        layers whatever the SAEs' scales).
        """
    ),
    code(
        """
        from hookunlearn.data import load_texts
        from hookunlearn.selection import select

        forget = load_texts("world:forget_corpus")
        retain = load_texts("world:retain_corpus")
        selection = select(base, saes, forget=forget, retain=retain)

        print(f"{len(forget)} forget texts, {len(retain)} retain texts")
        for layer, scored in selection.layers.items():
            chosen = "  <- chosen" if layer == selection.chosen_layer else ""
            print(f"layer {layer}: layer score {scored.layer_score:.3f}{chosen}")
        """
    ),
    md(
        """
        Left: the distribution of latent scores at every layer (what `Selection.save` writes as
        `scores.png`); a long right tail means a few latents are specific to the forget corpus.
        Right: the chosen layer's best latents and their mean activation on each corpus.
        """
    ),
    code(
        """
        top = selection.feature_table(n=15)
        fig, (hist, bars) = plt.subplots(1, 2, figsize=(11, 3.2))
        for layer, scored in selection.layers.items():
            width = 2 if layer == selection.chosen_layer else 1
            values = scored.scores[scored.eligible].numpy()
            hist.hist(values, bins=50, histtype="step", log=True, linewidth=width, label=f"layer {layer}")
        hist.set(xlabel=f"{selection.score} score", ylabel="latents", title="latent scores by layer")
        hist.legend(fontsize=8)
        x = range(len(top))
        bars.bar([i - 0.2 for i in x], [row["mean[forget]"] for row in top], 0.4, label="forget", color="#d1495b")
        bars.bar([i + 0.2 for i in x], [row["mean[retain]"] for row in top], 0.4, label="retain", color="#9aa5b1")
        bars.set_xticks(list(x), [str(row["latent"]) for row in top], rotation=90, fontsize=7)
        bars.set(xlabel="latent (best first)", ylabel="mean activation")
        bars.set_title(f"best latents at layer {selection.chosen_layer}")
        bars.legend(fontsize=8)
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## 3. Build the subspaces

        `build` turns the top-`k` latents' decoder directions into an orthonormal basis `U_rel`
        (the directions SSPU lets the weights change along) and the `k` least forget-related
        latents that are still alive on retain text into `U_irr` (where the forget residual is
        steered to). The diagnostics say how much of each corpus's activation energy `U_rel`
        captures and how far apart the two subspaces are.
        """
    ),
    code(
        """
        from hookunlearn.subspace import build

        sae = saes[selection.chosen_layer]
        k = min(K, sae.cfg.d_sae // 4)  # a tiny test world has too few latents for 32 + 32
        subspace = build(selection, sae, k=k)
        diagnostics = subspace.diagnostics
        print(f"{subspace.hook}, k={k}: rank U_rel {subspace.relevant.rank}, U_irr {subspace.irrelevant.rank}")
        print(
            f"activation energy in U_rel: forget {diagnostics['energy_share_forget']:.1%}, "
            f"retain {diagnostics['energy_share_retain']:.1%}"
        )
        print(f"smallest principal angle U_rel / U_irr: {min(diagnostics['principal_angles_deg']):.1f} deg")
        """
    ),
    md(
        """
        ## 4. Unlearn with SSPU

        With `h_l` the residual at the hooked layer and `u = c * P_irr r / |P_irr r|` a fixed random
        vector inside `U_irr`, SSPU minimises

        `MSE(h_l(forget), u) + alpha * MSE(h_l(retain), h_l^base(retain)) + lambda * |(W - W_0)(I - P_rel)|^2`

        over `mlp.W_out` of layers `l-2..l` (docs/methods.md). The defaults (`c` 50, `alpha` 100,
        `lambda` 1; AdamW lr 5e-3, batch 16) were tuned on this world; notebook 03 has starting
        points for billion-parameter models. `unlearn` edits the model in place, so it gets a fresh
        copy and `base` stays for comparison.
        """
    ),
    code(
        """
        from hookunlearn.pipeline.unlearn import unlearn_model
        from hookunlearn.train import TrainConfig

        model = load_model("world", device="cpu")
        result = unlearn_model(
            model, "sspu", subspace=subspace, forget=forget, retain=retain, train=TrainConfig(steps=STEPS)
        )

        print("options:", result.method_config)
        print("last step:", {key: round(value, 4) for key, value in result.train.final.items() if key != "lr"})
        print("relative change:", {name: f"{change:.1%}" for name, change in result.changed.items()})
        """
    ),
    code(
        """
        log = result.train.log
        fig, ax = plt.subplots(figsize=(6, 3))
        for term in ("forget", "retain", "regularizer"):
            ax.plot([row["step"] for row in log], [row.get(term, 0.0) for row in log], label=term)
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set(xlabel="step", title="SSPU loss terms (retain before its weight alpha)")
        ax.legend(fontsize=8)
        plt.show()
        """
    ),
    md(
        """
        ## 5. Evaluate: did it forget, and what did it keep?

        Suites are named by spec strings, as in `hookunlearn eval --suite`:

        - `mc:data=world:mc_hazard`: 4-choice questions on the hazardous facts (`continuation`
          protocol: each choice scored as the answer's text; a 1M-parameter model cannot do
          letter-MC) - this should fall towards chance;
        - `mc:data=world:mc_benign`: the same on benign domains - this should stay;
        - `qa`: entity QA recall per split (forget / retain / unknown people); SSPU targets the
          hazardous domain, not people, so all of it should stay (notebook 02 forgets people);
        - `perplexity`: held-out retain-side text.

        `evaluate(model, suites, baseline=base)` runs every suite on both models.
        """
    ),
    code(
        """
        from IPython.display import Markdown, display

        from hookunlearn.evaluation.report import evaluate, to_markdown
        from hookunlearn.evaluation.suites import parse_suite_spec

        specs = ["mc:data=world:mc_hazard", "mc:data=world:mc_benign", "qa", "perplexity"]
        report = evaluate(model, [parse_suite_spec(spec) for spec in specs], baseline=base)
        display(Markdown(to_markdown(report)))
        """
    ),
    code(
        """
        bars = [("mc_hazard", "accuracy", "hazard MC"), ("mc_benign", "accuracy", "benign MC")]
        bars += [("entity_qa", f"recall[{split}]", f"QA {split}") for split in ("forget", "retain", "unknown")]
        before = [report.baseline.results[suite].metrics[metric] for suite, metric, _ in bars]
        after = [report.evaluated.results[suite].metrics[metric] for suite, metric, _ in bars]
        x = range(len(bars))
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar([i - 0.2 for i in x], before, 0.4, label="base", color="#9aa5b1")
        ax.bar([i + 0.2 for i in x], after, 0.4, label="SSPU", color="#d1495b")
        ax.axhline(
            report.evaluated.results["mc_hazard"].details["chance"], color="k", linestyle=":", label="MC chance"
        )
        ax.set_xticks(list(x), [label for _, _, label in bars])
        ax.set(ylabel="accuracy / recall", ylim=(0, 1.05), title="before and after unlearning")
        ax.legend(fontsize=8)
        plt.show()
        """
    ),
    md(
        """
        ## 6. The same flow as the CLI: the runners

        Each CLI command is one runner of `hookunlearn.pipeline` with a frozen config: it resolves
        its inputs, runs, writes the run directory the next command reads, and returns a typed
        result. This is what `hookunlearn select / build / unlearn / eval` do, from Python
        (`docs/architecture.md`); `unlearn` also exports and verifies a `transformers` checkpoint.
        """
    ),
    code(
        """
        import tempfile
        from pathlib import Path

        from hookunlearn.pipeline import BuildConfig, EvalConfig, SelectConfig, UnlearnConfig
        from hookunlearn.pipeline import build as build_run
        from hookunlearn.pipeline import evaluate as evaluate_run
        from hookunlearn.pipeline import select as select_run
        from hookunlearn.pipeline import unlearn as unlearn_run
        from hookunlearn.train import TrainConfig

        runs = Path(tempfile.mkdtemp())
        chosen = select_run(SelectConfig(out=str(runs / "sel"), device="cpu")).selection.chosen_layer
        build_run(BuildConfig(selection=str(runs / "sel"), k=k, out=str(runs / "sub")))
        run = unlearn_run(
            UnlearnConfig(out=str(runs / "run"), method="sspu", subspace=str(runs / "sub"),
                          train=TrainConfig(steps=STEPS), device="cpu")
        )
        evaluated = evaluate_run(
            EvalConfig(model=str(run.out / "model"), baseline="world", suites=("mc:data=world:mc_hazard",), device="cpu")
        )
        print(f"layer {chosen}; {run.out}: {sorted(p.name for p in run.out.iterdir())}")
        for row in evaluated.report.rows():
            print(row)
        """
    ),
    md(
        """
        On the shipped world at 300 steps (measured, README): hazard MC 98.5% -> 32.0%, benign MC
        100% -> 100%, QA recall of retain people 98.9% -> 97.7%. On a tiny test world with a few
        steps the numbers mean nothing.

        Next: `02_inside_the_forgetting.ipynb` forgets *people* with known-to-unknown alignment and
        looks inside the model; `03_real_model_recipe.ipynb` runs SSPU on gemma-2-2b-it with
        WMDP-Cyber and alignment on gpt2-small.
        """
    ),
]


# ---------------------------------------------------------------------------------------------
# 02: inside the forgetting
# ---------------------------------------------------------------------------------------------

INSIDE = [
    md(
        """
        # Inside the forgetting: what known-to-unknown alignment changes

        `align` (our reading of Yamashita et al., arXiv 2509.15631; docs/methods.md) makes the
        model's SAE code on text about *target* people look like its code on people it has never
        heard of, while preserving its activations on text about everyone else. This notebook
        unlearns the embedded world's forget people and compares the base and the unlearned model
        from the inside:

        1. the SAE latents that tell known from unknown names: how they fire on the target names;
        2. where the targets' codes sit relative to the known and unknown centroids;
        3. logit lens: after which layer the answer to a question about a target is readable, and
           whether it still is;
        4. attention from the answer position to the name.

        Environment knobs, as in notebook 01: `HOOKUNLEARN_WORLD`, `HOOKUNLEARN_STEPS` (default 300).
        """
    ),
    code(
        """
        import os
        from collections import Counter

        import matplotlib.pyplot as plt
        import torch

        from hookunlearn.data import load_records, load_texts
        from hookunlearn.models import load_model
        from hookunlearn.saes import load_sae

        STEPS = int(os.environ.get("HOOKUNLEARN_STEPS", "300"))
        K = 32
        """
    ),
    md(
        """
        ## 1. Entities and the entity selection

        Entity prompts are the bare names of people in three sets: `known` (retain people, whom the
        model knows), `unknown` (names it never saw with any fact) and `target` (the forget people,
        known to the model). `select(objective="entity")` reads the SAE code at the last token of
        each name and scores each latent by P(fires | known) - P(fires | unknown) (Ferrando et
        al.); the chosen layer is the one with the best single latent. `build` then stores the mean
        code of known and of unknown people: the centroids `align` moves the targets between.
        """
    ),
    code(
        """
        from hookunlearn.entities import parse_entity_prompts
        from hookunlearn.selection import select
        from hookunlearn.subspace import build

        base = load_model("world", device="cpu")
        saes = [load_sae(f"world:{layer}", base) for layer in range(base.cfg.n_layers)]
        prompts = parse_entity_prompts(load_records("world:entity_prompts"), "world:entity_prompts")
        entity = select(base, saes, objective="entity", entities=prompts)
        layer, sae = entity.chosen_layer, saes[entity.chosen_layer]
        # `build` needs k relevant + k irrelevant latents that fire on known names (a tiny world has few)
        alive_on_known = int((entity.chosen.roles["known"].freq >= 1e-3).sum())
        subspace = build(entity, sae, k=min(K, alive_on_known // 2))

        print("prompts:", dict(Counter(p.set for p in prompts)))
        print(f"chosen layer {layer} ({subspace.hook})")
        d = subspace.diagnostics
        print(
            f"targets' mean code: {d['target_distance_to_known']:.1f} from the known centroid, "
            f"{d['target_distance_to_unknown']:.1f} from the unknown one (nearer {d['target_nearer']})"
        )
        """
    ),
    md(
        """
        ## 2. Unlearn with `align`

        The forget side is every token of texts about the targets (their biographies and QA lines,
        `world:forget_entities_corpus`); the preserved side is every token of the retain people's
        biographies and QA lines (`world:retain_entities_corpus`). Why these and not just the name
        tokens: docs/methods.md (by the hooked layer, attention has already copied the person's
        identity into later positions). Then the behavioural check: QA recall per split, and the
        `probe` suite (a known/unknown probe trained on the base model's activations, applied to
        both).
        """
    ),
    code(
        """
        from IPython.display import Markdown, display

        from hookunlearn.evaluation.report import evaluate, to_markdown
        from hookunlearn.evaluation.suites import EvalContext, parse_suite_spec
        from hookunlearn.pipeline.unlearn import unlearn_model
        from hookunlearn.train import TrainConfig

        model = load_model("world", device="cpu")
        result = unlearn_model(
            model,
            "align",
            subspace=subspace,
            sae=sae,
            forget=load_texts("world:forget_entities_corpus"),
            retain=load_texts("world:retain_entities_corpus"),
            train=TrainConfig(steps=STEPS),
        )
        print("options:", result.method_config, "| trained:", list(result.changed))
        suites = [parse_suite_spec("qa"), parse_suite_spec("probe")]
        report = evaluate(model, suites, baseline=base, context=EvalContext(subspace=subspace, sae=sae))
        display(Markdown(to_markdown(report)))
        """
    ),
    md(
        """
        ## 3. Which latents fire on the target names?

        The entity selection's best latents fire on known names and not on unknown ones. Before
        unlearning they should fire on the targets as on any known person; `align` should silence
        them on the targets and leave them on known people. Bars: mean activation at the last name
        token (`entity_stats`, the statistics `select` itself uses); black ticks: unknown people on
        the base model.
        """
    ),
    code(
        """
        from hookunlearn.selection import entity_stats


        def stats_by_role(m):
            return entity_stats(m, {layer: sae}, prompts, second_moments=False)[layer]


        before, after = stats_by_role(base), stats_by_role(model)
        latents = entity.top_latents(min(10, len(entity.chosen.ranked())))
        x = range(len(latents))
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
        for ax, role in zip(axes, ("target", "known"), strict=True):
            ax.bar([i - 0.2 for i in x], before[role].mean_code[latents].numpy(), 0.4, label="base", color="#9aa5b1")
            ax.bar([i + 0.2 for i in x], after[role].mean_code[latents].numpy(), 0.4, label="align", color="#d1495b")
            ax.scatter(
                x, before["unknown"].mean_code[latents].numpy(), marker="_", s=200, color="k", label="unknown (base)"
            )
            ax.set_xticks(list(x), [str(latent) for latent in latents], fontsize=7)
            ax.set(title=f"{role} names", xlabel="latent (best known-vs-unknown first)")
            ax.legend(fontsize=8)
        axes[0].set_ylabel(f"mean activation, layer {layer}")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## 4. Known and unknown centroids

        Each point is one name's SAE code (last name token), placed by its distance to the known
        centroid (x) and to the unknown centroid (y). Big markers: the mean code of the group, the
        number `align`'s loss and the `probe` suite use. Targets should cross from the known side
        (above the diagonal: nearer the known centroid) to the unknown side; held-out known people,
        whose names and QA lines the unlearning run never read, should stay where they were.
        """
    ),
    code(
        """
        from hookunlearn.activations import activations_at_span_end

        centroids = {side: subspace.centroids[f"code_{side}_all"] for side in ("known", "unknown")}
        groups = {
            "target": [p for p in prompts if p.set == "target"],
            "known (held-out)": [p for p in prompts if p.set == "known" and p.fold == "heldout"],
        }


        @torch.no_grad()
        def codes(m, group):
            ends = [p.entity_end_char for p in group]
            acts = activations_at_span_end(m, [p.prompt for p in group], ends, [subspace.hook])[subspace.hook]
            return sae.encode(acts.to(sae.dtype)).float()


        fig, ax = plt.subplots(figsize=(5.5, 5))
        for (name, group), marker in zip(groups.items(), ("o", "x"), strict=True):
            for label, m, color in (("base", base, "#9aa5b1"), ("align", model, "#d1495b")):
                c = codes(m, group)
                to = {side: (c - centroid).norm(dim=-1) for side, centroid in centroids.items()}
                ax.scatter(to["known"].numpy(), to["unknown"].numpy(), marker=marker, color=color, alpha=0.4, s=18)
                mean = {side: float((c.mean(0) - centroid).norm()) for side, centroid in centroids.items()}
                ax.scatter(
                    mean["known"], mean["unknown"], marker=marker, color=color, s=150, label=f"{name}, {label}"
                )
                print(
                    f"{name:17} {label:5}: mean code {mean['known']:5.1f} from known, {mean['unknown']:5.1f} from unknown"
                )
        limit = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([0, limit], [0, limit], color="k", linewidth=0.5)
        ax.set(xlabel="distance to known centroid", ylabel="distance to unknown centroid")
        ax.legend(fontsize=8)
        plt.show()
        """
    ),
    md(
        """
        ## 5. Logit lens on the answer

        For the QA prompts about forget people (and, as a control, as many about retain people), read
        the residual at the last prompt token after each block, apply the model's final LayerNorm
        and unembedding, and take the log-probability of the answer's first token. Where the curve
        rises is where the answer becomes linearly readable; after unlearning the forget curve
        should stay low through the last layer. (Early layers of a small model decode poorly in
        any case: compare base with unlearned, not layers with each other.)
        """
    ),
    code(
        """
        import math

        from hookunlearn.activations import tokenize_batch
        from hookunlearn.evaluation.scoring import encode_pair

        qa = load_records("world:entity_qa")
        qa_forget = [r for r in qa if r["split"] == "forget"]
        qa_retain = [r for r in qa if r["split"] == "retain"][: len(qa_forget)]


        def last_positions(mask):
            return (mask.long() * torch.arange(mask.shape[1])).argmax(dim=1)


        @torch.no_grad()
        def logit_lens(m, rows):
            tokens, mask = tokenize_batch(m, [r["prompt"] for r in rows])
            last = last_positions(mask)
            answer = torch.tensor([encode_pair(m, r["prompt"], " " + r["answer"], []).continuation[0] for r in rows])
            hooks = [f"blocks.{i}.hook_resid_post" for i in range(m.cfg.n_layers)]
            _, cache = m.run_with_cache(tokens, names_filter=hooks)
            rows_index = torch.arange(len(rows))
            curve = []
            for hook in hooks:
                resid = cache[hook][rows_index, last][:, None, :]  # [n, 1, d_model]
                log_probs = m.unembed(m.ln_final(resid))[:, 0].log_softmax(dim=-1)
                curve.append(float(log_probs[rows_index, answer].mean()))
            return curve


        fig, ax = plt.subplots(figsize=(6, 3.2))
        for rows, name, style in ((qa_forget, "forget people", "-"), (qa_retain, "retain people", "--")):
            for label, m, color in (("base", base, "#9aa5b1"), ("align", model, "#d1495b")):
                ax.plot(
                    range(base.cfg.n_layers),
                    logit_lens(m, rows),
                    style,
                    color=color,
                    marker="o",
                    label=f"{name}, {label}",
                )
        ax.axhline(-math.log(base.cfg.d_vocab), color="k", linestyle=":", label="uniform")
        ax.axvline(layer, color="k", linewidth=0.5)
        ax.set(
            xlabel="after block", ylabel="log p(answer's first token)", title="logit lens (vertical: hooked layer)"
        )
        ax.set_xticks(range(base.cfg.n_layers))
        ax.legend(fontsize=7)
        plt.show()
        """
    ),
    md(
        """
        ## 6. Attention from the answer position to the name

        The same QA prompts: for every layer and head, the attention weight from the last prompt
        token (where the answer is predicted) to the tokens of the person's name, summed over the
        name's tokens and averaged over prompts. `align` trains only `mlp.W_out` of layers
        `l-2..l`, so any change here comes from changed residuals feeding the attention, not from
        changed attention weights.
        """
    ),
    code(
        """
        def name_positions(m, prompt, name, offset):
            start = prompt.find(name)
            spans = m.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            return [offset + i for i, (a, b) in enumerate(spans) if a < start + len(name) and b > start]


        @torch.no_grad()
        def attention_to_name(m, rows):
            tokens, mask = tokenize_batch(m, [r["prompt"] for r in rows])
            last, offset = last_positions(mask), int(mask[0].long().argmax())  # offset: 1 with a BOS
            hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(m.cfg.n_layers)]
            _, cache = m.run_with_cache(tokens, names_filter=hooks)
            out = torch.zeros(m.cfg.n_layers, m.cfg.n_heads)
            for row, record in enumerate(rows):
                keys = name_positions(m, record["prompt"], record["entity"], offset)
                for i, hook in enumerate(hooks):
                    out[i] += cache[hook][row, :, int(last[row]), keys].sum(dim=-1).cpu() / len(rows)
            return out


        maps = {}
        for rows, name in ((qa_forget, "forget people"), (qa_retain, "retain people")):
            maps[name, "base"], maps[name, "align"] = attention_to_name(base, rows), attention_to_name(model, rows)
            maps[name, "align - base"] = maps[name, "align"] - maps[name, "base"]
        # one colour scale for every attention map, one for every difference: rows compare by eye
        top = max(float(values.max()) for (_, label), values in maps.items() if label != "align - base")
        change = (
            max(float(values.abs().max()) for (_, label), values in maps.items() if label == "align - base") or 1.0
        )
        fig, axes = plt.subplots(2, 3, figsize=(11, 5.5))
        for ax, ((name, label), values) in zip(axes.flat, maps.items(), strict=True):
            if label == "align - base":
                image = ax.imshow(values, cmap="RdBu_r", vmin=-change, vmax=change)
            else:
                image = ax.imshow(values, cmap="viridis", vmin=0, vmax=top)
            ax.set(title=f"{name}: {label}", xlabel="head", ylabel="layer")
            ax.set_xticks(range(values.shape[1]))
            ax.set_yticks(range(values.shape[0]))
            fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        On the shipped world at 300 steps (docs/methods.md): QA recall of forget people 99.2% ->
        0.0%, retain people 98.9% -> 97.6%; the targets' mean code moves from 1.8 / 12.8 (distance
        to the known / unknown centroid) to 11.5 / 2.5. The price is off-target: hazard MC 98.5% ->
        86.5%. On a tiny test world with a few steps the plots show the plumbing, not the effect.
        """
    ),
]


# ---------------------------------------------------------------------------------------------
# 03: the real-model recipe
# ---------------------------------------------------------------------------------------------

RECIPE = [
    md(
        """
        # Recipe: SSPU and known-to-unknown alignment on real models

        Two recipes for a GPU with access to the Hugging Face Hub:

        **(a) gemma-2-2b-it + Gemma Scope + WMDP-Cyber, with SSPU.** SAEs from the SAELens release
        `gemma-scope-2b-pt-res-canonical` (16k latents, `blocks.L.hook_resid_post`); forget corpus
        `cais/wmdp-corpora` `cyber-forget-corpus`, retain corpus `cyber-retain-corpus`; evaluated on
        WMDP-Cyber and MMLU with lm-evaluation-harness's zero-shot letter protocol (docs/evaluation.md).
        Gemma is gated: accept its licence on huggingface.co and set `HF_TOKEN`.

        **(b) gpt2-small + `gpt2-small-res-jb`, with known-to-unknown alignment** on a few famous
        athletes, with data written by this notebook in the schemas `hookunlearn` reads.

        **The hyperparameters are starting points, not tuned results.** The library defaults were
        tuned on the 1M-parameter embedded world (lr 5e-3) and would wreck a 2B model; these follow
        RMU's WMDP setup (AdamW lr 5e-5, batch 4, 512 tokens, alpha 1200, `mlp.W_out` of the three
        layers ending at the hooked one), with SSPU's steering coefficient set from the measured
        residual norm. Each part ends with what to sweep. The same runs exist as CLI presets:
        `hookunlearn select/build/unlearn/eval --recipe sspu-wmdp-cyber-gemma2-2b` and
        `--recipe align-entities-gpt2-small`.

        **Dry run.** `DRY_RUN = True` (or `HOOKUNLEARN_DRY_RUN=1`) runs every cell below offline in
        seconds: random-init models of the same architectures (tiny widths) saved as Hugging Face
        checkpoints, random SAEs on the same hooks, stand-in datasets in the hub schemas, 2
        unlearning steps and 8 questions per suite. It checks the plumbing before you pay for a GPU.
        """
    ),
    code(
        """
        import os

        # True: rehearse every cell offline on random-init stand-ins (seconds; the numbers mean
        # nothing). False: the real run, on a GPU with internet access.
        DRY_RUN = os.environ.get("HOOKUNLEARN_DRY_RUN", "0").lower() in ("1", "true", "yes")
        """
    ),
    code(
        """
        import torch

        DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
        DTYPE = "float32"  # gemma-2-2b: ~10 GB; in bfloat16 weights, lr-5e-5 updates may round away

        # (a) SSPU on WMDP-Cyber
        GEMMA_MODEL = "google/gemma-2-2b-it"
        GEMMA_LAYERS = (3, 5, 7)  # candidates for `select` (the CLI recipe fixes 7: RMU's hook on zephyr-7b)
        GEMMA_SAES = {
            layer: f"gemma-scope-2b-pt-res-canonical:layer_{layer}/width_16k/canonical" for layer in GEMMA_LAYERS
        }
        CYBER_FORGET = "cais/wmdp-corpora:cyber-forget-corpus@train"
        CYBER_RETAIN = "cais/wmdp-corpora:cyber-retain-corpus@train"
        WMDP_CYBER_DATA = None  # None: the hub's cais/wmdp:wmdp-cyber@test
        MMLU_DATA = None  # None: the hub's cais/mmlu

        # (b) align on famous athletes
        GPT2_MODEL = "gpt2"
        GPT2_LAYERS = (6, 8, 10)
        GPT2_SAES = {layer: f"gpt2-small-res-jb:blocks.{layer}.hook_resid_pre" for layer in GPT2_LAYERS}

        STEPS = 150  # (a): RMU used 80-150 steps of batch 4 on 7B models
        GPT2_STEPS = 300  # (b): the world's budget for align
        N_DOCS = 1000  # texts used per corpus
        MAX_TOKENS = 512  # tokens per text
        EVAL_LIMIT = None  # questions per suite (None: all)
        MMLU_SAMPLE = 1000  # seeded sample of all of MMLU (plus two full neighbouring subjects)
        """
    ),
    md(
        """
        ### Dry-run stand-ins

        Only in dry mode: write tiny random-init checkpoints (Gemma-2 and GPT-2 configs with the
        layers the specs above name), random SAELens SAEs on the same hooks with the same weight
        processing, and a handful of rows in each dataset's schema, then point the names above at
        them. Every later cell is the same in both modes.
        """
    ),
    code(
        """
        if DRY_RUN:
            import json
            import tempfile
            import warnings
            from pathlib import Path

            import transformers
            from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig
            from sae_lens.saes.sae import SAEMetadata
            from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma2Config, GPT2Config

            from hookunlearn.world.assets import world_model_dir

            transformers.utils.logging.disable_progress_bar()
            STANDIN = Path(tempfile.mkdtemp(prefix="hookunlearn-dry-run-"))
            tokenizer = AutoTokenizer.from_pretrained(world_model_dir())  # a byte-level BPE: encodes any text
            special = {
                "vocab_size": len(tokenizer),
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            }

            def checkpoint(name, config):
                torch.manual_seed(0)
                AutoModelForCausalLM.from_config(config).save_pretrained(STANDIN / name)
                tokenizer.save_pretrained(STANDIN / name)
                return str(STANDIN / name)

            def random_sae(name, kind, hook, d_in, **processing):
                sae_class, config_class = {
                    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
                    "standard": (StandardSAE, StandardSAEConfig),
                }[kind]
                metadata = SAEMetadata(hook_name=hook, model_name=name, model_from_pretrained_kwargs=processing)
                with warnings.catch_warnings():  # SAELens suggests how to load a model for this SAE
                    warnings.simplefilter("ignore", UserWarning)
                    sae = sae_class(config_class(d_in=d_in, d_sae=256, metadata=metadata))
                with torch.no_grad():
                    for parameter in sae.parameters():  # SAELens zero-initialises some; random codes must fire
                        parameter.normal_(0.0, 0.1)
                sae.save_model(STANDIN / "saes" / name)
                return str(STANDIN / "saes" / name)

            def jsonl(name, rows):
                (STANDIN / name).write_text("".join(json.dumps(row) + "\\n" for row in rows), encoding="utf-8")
                return str(STANDIN / name)

            gemma_config = Gemma2Config(
                hidden_size=64, intermediate_size=128, num_hidden_layers=max(GEMMA_LAYERS) + 1, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=256, **special,
            )  # fmt: skip
            GEMMA_MODEL = checkpoint("gemma-2-tiny", gemma_config)
            GEMMA_SAES = {
                layer: random_sae(f"gemma-{layer}", "jumprelu", f"blocks.{layer}.hook_resid_post", 64)
                for layer in GEMMA_LAYERS
            }
            GPT2_MODEL = checkpoint(
                "gpt2-tiny", GPT2Config(n_embd=64, n_layer=12, n_head=4, n_positions=256, **special)
            )
            GPT2_SAES = {  # gpt2-small-res-jb was trained on centred writing weights; so are these
                layer: random_sae(
                    f"gpt2-{layer}", "standard", f"blocks.{layer}.hook_resid_pre", 64, center_writing_weights=True
                )
                for layer in GPT2_LAYERS
            }
            CYBER_FORGET = jsonl(
                "cyber-forget.jsonl",
                [{"text": f"Stand-in forget document {i} on network intrusion."} for i in range(16)],
            )
            CYBER_RETAIN = jsonl(
                "cyber-retain.jsonl",
                [{"text": f"Stand-in retain document {i} on computer science."} for i in range(16)],
            )
            mc_row = {"question": "Which stand-in answer is right?", "choices": ["alpha", "beta", "gamma", "delta"]}
            WMDP_CYBER_DATA = jsonl("wmdp-cyber.jsonl", [{**mc_row, "answer": i % 4} for i in range(8)])
            MMLU_DATA = jsonl(
                "mmlu.jsonl", [{**mc_row, "answer": i % 4, "subject": "computer_security"} for i in range(8)]
            )
            STEPS, GPT2_STEPS, N_DOCS, MAX_TOKENS, EVAL_LIMIT, MMLU_SAMPLE = 2, 2, 16, 64, 8, 8
            print(f"DRY RUN: stand-ins in {STANDIN}")
        """
    ),
    md(
        """
        ## (a) gemma-2-2b-it + Gemma Scope + WMDP-Cyber, with SSPU

        ### Load

        Raw weights (`processing` none): Gemma Scope was trained on unprocessed residuals, and
        `load_sae` refuses an SAE whose expected processing differs from the model's at its hook.
        Gemma Scope was trained on the pretrained gemma-2-2b; reading the instruction-tuned model
        with it is common practice, but check its reconstruction at the chosen layer before you
        trust the selection.
        """
    ),
    code(
        """
        from hookunlearn.data import load_texts
        from hookunlearn.models import load_model
        from hookunlearn.saes import load_sae

        model = load_model(GEMMA_MODEL, device=DEVICE, dtype=DTYPE)
        saes = {layer: load_sae(spec, model) for layer, spec in GEMMA_SAES.items()}
        forget = load_texts(CYBER_FORGET)[:N_DOCS]
        retain = load_texts(CYBER_RETAIN)[:N_DOCS]
        print(
            f"{model.cfg.n_layers} layers, d_model {model.cfg.d_model}; {len(forget)} forget / {len(retain)} retain texts"
        )
        """
    ),
    md(
        """
        ### Select and build

        `second_moments=False` skips the d_model x d_model activation second moments (`build`'s
        energy-share diagnostics): they are accumulated in float64 on the CPU, which at d_model 2304
        costs more than the forward passes. The top latents' Neuronpedia pages are the quickest
        check that the selection found cyber-security features and not, say, code formatting.
        """
    ),
    code(
        """
        from hookunlearn.selection import select
        from hookunlearn.subspace import build

        selection = select(
            model, saes, forget=forget, retain=retain, max_tokens=MAX_TOKENS, batch_size=8, second_moments=False
        )
        sae = saes[selection.chosen_layer]
        subspace = build(selection, sae, k=min(32, sae.cfg.d_sae // 4))
        print(
            f"chosen layer {selection.chosen_layer}:",
            {layer: round(s.layer_score, 3) for layer, s in selection.layers.items()},
        )
        neuronpedia = f"https://www.neuronpedia.org/gemma-2-2b/{selection.chosen_layer}-gemmascope-res-16k"
        for row in selection.feature_table(n=10):
            link = "" if DRY_RUN else f"{neuronpedia}/{row['latent']}"
            print(f"latent {row['latent']:6}  score {row['score']:8.3f}  {link}")
        """
    ),
    md(
        """
        ### Steering coefficient

        SSPU's target is a vector of norm `c` in the irrelevant subspace. On the embedded world the
        tuned `c` (50) is about 2x the residual norm at the hooked layer; Gemma's residual norms are
        far larger (its embeddings are scaled by sqrt(d_model)), so measure and scale. (The CLI
        recipe fixes `c` at 200 for layer 7; measuring adapts it to whichever layer `select` chose.)
        """
    ),
    code(
        """
        from hookunlearn.activations import cache_hooks, tokenize_batch

        tokens, mask = tokenize_batch(model, retain[:16], max_tokens=MAX_TOKENS)
        acts = cache_hooks(model, tokens, [subspace.hook])[subspace.hook]
        resid_norm = float(acts[mask.to(acts.device)].float().norm(dim=-1).mean())
        STEERING_COEFF = 2.0 * resid_norm
        print(f"mean residual norm at {subspace.hook}: {resid_norm:.1f} -> steering_coeff {STEERING_COEFF:.1f}")
        """
    ),
    md(
        """
        ### Evaluate the base model, unlearn, evaluate again

        The base model's report is computed first and reused as the baseline, so only one copy of
        the model is ever in memory (`unlearn` edits it in place). WMDP-Cyber chance is 25%; MMLU's
        college computer science and computer security are the neighbouring subjects RMU reports,
        where collateral damage shows first.
        """
    ),
    code(
        """
        from IPython.display import Markdown, display

        from hookunlearn.evaluation.report import evaluate, to_markdown
        from hookunlearn.evaluation.standard import MMLUConfig, MMLUSuite, WMDPConfig, WMDPSuite
        from hookunlearn.pipeline.unlearn import unlearn_model
        from hookunlearn.train import TrainConfig

        suites = [
            WMDPSuite(WMDPConfig(subset="wmdp-cyber", data=WMDP_CYBER_DATA, limit=EVAL_LIMIT)),
            MMLUSuite(MMLUConfig(subjects="all", data=MMLU_DATA, limit=MMLU_SAMPLE, seed=0, per_subject=False)),
            MMLUSuite(MMLUConfig(subjects="college_computer_science", data=MMLU_DATA, limit=EVAL_LIMIT)),
            MMLUSuite(MMLUConfig(subjects="computer_security", data=MMLU_DATA, limit=EVAL_LIMIT)),
        ]
        base_report = evaluate(model, suites)

        train = TrainConfig(steps=STEPS, lr=5e-5, batch_size=4, seed=0)
        options = {"steering_coeff": STEERING_COEFF, "alpha": 1200.0, "regularizer": "soft", "lam": 1.0}
        result = unlearn_model(
            model,
            "sspu",
            subspace=subspace,
            forget=forget,
            retain=retain,
            options=options,
            train=train,
            max_tokens=MAX_TOKENS,
        )
        print("last step:", {key: round(value, 4) for key, value in result.train.final.items() if key != "lr"})

        report = evaluate(model, suites, baseline=base_report)
        display(Markdown(to_markdown(report)))
        """
    ),
    md(
        """
        ### What to sweep

        - WMDP-Cyber does not fall: raise `steering_coeff` (2x -> 4x the residual norm), lower
          `alpha` (1200 -> 300 -> 100, the world's value), then `STEPS` (150 -> 300) or `lr`
          (5e-5 -> 1e-4).
        - MMLU falls (more than a point or two): raise `alpha`, or try `regularizer="hard"`
          (updates projected onto the relevant subspace).
        - Try other hooked layers (`select(..., layer=L)`) and `k` (16-128 of 16k latents).

        Free the GPU before part (b).
        """
    ),
    code(
        """
        del model, saes, sae, result
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        """
    ),
    md(
        """
        ## (b) gpt2-small + gpt2-small-res-jb, with known-to-unknown alignment

        ### Data

        Famous athletes and their sports (known people), invented names (unknown people), and four
        of the athletes as targets. Written as files in the schemas `hookunlearn` reads, so you can
        swap in your own: entity prompts (`prompt`, `entity`, `set`), QA items (`prompt`, `answer`,
        `entity`, `split`) and texts (`text`). Following docs/methods.md, the forget texts cover
        the targets in the format they are asked in, and the preserved texts do the same for half
        of the other athletes (`retain`); the other half (`heldout`) measures whether the
        preservation generalises.
        """
    ),
    code(
        """
        import json
        import tempfile
        from pathlib import Path

        SPORTS = {
            "basketball": [
                "Michael Jordan",
                "LeBron James",
                "Kobe Bryant",
                "Shaquille O'Neal",
                "Stephen Curry",
                "Larry Bird",
                "Magic Johnson",
            ],
            "tennis": ["Roger Federer", "Serena Williams", "Rafael Nadal", "Novak Djokovic", "Andre Agassi"],
            "golf": ["Tiger Woods", "Jack Nicklaus", "Phil Mickelson"],
            "soccer": ["Lionel Messi", "Cristiano Ronaldo", "David Beckham", "Zinedine Zidane", "Wayne Rooney"],
            "football": ["Tom Brady", "Peyton Manning", "Joe Montana", "Jerry Rice"],
            "baseball": ["Babe Ruth", "Derek Jeter", "Barry Bonds", "Alex Rodriguez"],
            "hockey": ["Wayne Gretzky", "Sidney Crosby", "Mario Lemieux"],
        }
        TARGETS = {"Michael Jordan", "Roger Federer", "Tiger Woods", "Lionel Messi"}
        UNKNOWN = [
            "Dorvin Kasselby", "Marta Quillane", "Tobias Frennick", "Ilse Vandermoot", "Caspar Oldwin", "Renata Sulk",
            "Hollis Braywater", "Agna Petrovsky", "Lucan Merriweather", "Odile Farnsby", "Brisco Tallent", "Yvette Marchbank",
            "Emory Glasspool", "Sanna Oakridge", "Florian Deschaux", "Wendeline Rusk", "Corbin Halloway", "Mira Kestrel",
            "Anselm Brooker", "Petra Lindqvast", "Jasper Wrenfield", "Nadia Coldwell", "Osric Pembury", "Greta Falkner",
        ]  # fmt: skip
        QUESTIONS = ["Fact: {name} plays the sport of", "{name} is famous for playing"]
        STATEMENTS = ["{name} is a professional {sport} player.", "As an athlete, {name} is best known for {sport}."]

        sport_of = {name: sport for sport, names in SPORTS.items() for name in names}
        others = sorted(set(sport_of) - TARGETS)
        split_of = {
            name: "forget" if name in TARGETS else ("retain" if others.index(name) % 2 == 0 else "heldout")
            for name in sport_of
        }


        def texts_about(name):
            statements = [s.format(name=name, sport=sport_of[name]) for s in STATEMENTS]
            return statements + [f"{q.format(name=name)} {sport_of[name]}." for q in QUESTIONS]


        entities = [{"prompt": n, "entity": n, "set": "target" if n in TARGETS else "known"} for n in sport_of]
        entities += [{"prompt": n, "entity": n, "set": "unknown"} for n in UNKNOWN]
        qa_items = [
            {"prompt": q.format(name=n), "answer": sport_of[n], "entity": n, "split": split_of[n]}
            for n in sport_of
            for q in QUESTIONS
        ]

        ATHLETES = Path(tempfile.mkdtemp(prefix="hookunlearn-athletes-"))
        files = {
            "entities": [json.dumps(row) for row in entities],
            "qa": [json.dumps(row) for row in qa_items],
            "forget": [json.dumps({"text": t}) for n in sorted(TARGETS) for t in texts_about(n)],
            "retain": [json.dumps({"text": t}) for n in others if split_of[n] == "retain" for t in texts_about(n)],
        }
        for name, lines in files.items():
            (ATHLETES / f"{name}.jsonl").write_text("\\n".join(lines) + "\\n", encoding="utf-8")
        print(
            {split: sum(s == split for s in split_of.values()) for split in ("forget", "retain", "heldout")},
            f"+ {len(UNKNOWN)} unknown; files in {ATHLETES}",
        )
        """
    ),
    md(
        """
        ### Load, select, build

        The `gpt2-small-res-jb` SAEs expect centred writing weights (their SAELens registry entry
        says so), so the model is loaded with `processing="center_writing_weights"`; with raw
        weights `load_sae` refuses them (the residual stream would differ by its mean).
        """
    ),
    code(
        """
        from hookunlearn.data import load_records
        from hookunlearn.entities import parse_entity_prompts

        gpt2 = load_model(GPT2_MODEL, device=DEVICE, processing="center_writing_weights")
        gpt2_saes = {layer: load_sae(spec, gpt2) for layer, spec in GPT2_SAES.items()}
        prompts = parse_entity_prompts(load_records(ATHLETES / "entities.jsonl"), "athletes", template=None)
        entity = select(gpt2, gpt2_saes, objective="entity", entities=prompts)
        sae = gpt2_saes[entity.chosen_layer]
        entity_sub = build(entity, sae, k=32)
        d = entity_sub.diagnostics
        print(f"chosen {entity_sub.hook}; held-out check of the best latent: {entity.heldout_scores()}")
        print(
            f"targets' mean code: {d['target_distance_to_known']:.1f} from known, {d['target_distance_to_unknown']:.1f} from unknown"
        )
        """
    ),
    md(
        """
        ### The hooked layer for a `hook_resid_pre` SAE

        `unlearn` reads the residual *after* block `layer` (`blocks.{layer}.hook_resid_post`).
        These SAEs read `blocks.L.hook_resid_pre`, which is the same tensor as
        `blocks.{L-1}.hook_resid_post`, so the run hooks the block before (checked here).
        """
    ),
    code(
        """
        train_layer = entity.chosen_layer - 1 if entity_sub.hook.endswith("hook_resid_pre") else entity.chosen_layer
        post = f"blocks.{train_layer}.hook_resid_post"
        _, cache = gpt2.run_with_cache("Michael Jordan", names_filter=[entity_sub.hook, post])
        assert torch.equal(cache[entity_sub.hook], cache[post]), "the SAE's hook is not the trained layer's output"
        print(f"SAE hook {entity_sub.hook} == {post}: unlearn_model(layer={train_layer})")
        """
    ),
    md(
        """
        ### Evaluate, unlearn, evaluate

        `qa`: recall of each athlete's sport, per split (forget should fall; retain and heldout
        should stay; unknown is the floor). `probe`: a known/unknown probe trained on the base
        model's activations at the SAE's hook; on the unlearned model it should call the targets
        unknown, and `code_distance[known/unknown]` is the targets' mean code's distance to the
        centroids. The same `EvalContext` is passed to both calls, so the probe is trained once,
        on the base model.
        """
    ),
    code(
        """
        from hookunlearn.evaluation.activation import ProbeConfig, ProbeSuite
        from hookunlearn.evaluation.standard import QAConfig, QASuite
        from hookunlearn.evaluation.suites import EvalContext

        suites = [
            QASuite(QAConfig(data=str(ATHLETES / "qa.jsonl"), name="athletes_qa")),
            ProbeSuite(ProbeConfig(entities=str(ATHLETES / "entities.jsonl"), template=None)),
        ]
        context = EvalContext(subspace=entity_sub, sae=sae)
        base_report = evaluate(gpt2, suites, context=context)

        train = TrainConfig(steps=GPT2_STEPS, lr=1e-4, batch_size=16, seed=0)
        result = unlearn_model(
            gpt2,
            "align",
            subspace=entity_sub,
            sae=sae,
            layer=train_layer,
            forget=load_texts(ATHLETES / "forget.jsonl"),
            retain=load_texts(ATHLETES / "retain.jsonl"),
            options={"alpha": 30.0, "distance": "l2"},
            train=train,
        )
        print("last step:", {key: round(value, 4) for key, value in result.train.final.items() if key != "lr"})

        report = evaluate(gpt2, suites, baseline=base_report, context=context)
        display(Markdown(to_markdown(report)))
        """
    ),
    md(
        """
        ### What to sweep, and keeping the result

        - Forget recall does not fall: lower `alpha` (30 -> 10), raise `lr` (1e-4 -> 3e-4) or
          `GPT2_STEPS`; make sure the forget texts contain the question format you evaluate.
        - Retain or held-out recall falls: raise `alpha` (30 -> 100), and add preserved text in
          the question format for more people (on the world, that is what held retain recall).
        - For a 2B model use lr ~5e-5 and batch 4, as in part (a).

        `hookunlearn.export.export_model(gpt2, "athletes-align/")` writes the edited model as a
        `transformers` checkpoint and verifies it by reloading (`hookunlearn export` on the CLI).
        """
    ),
]


NOTEBOOKS: dict[str, list[nbformat.NotebookNode]] = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_inside_the_forgetting.ipynb": INSIDE,
    "03_real_model_recipe.ipynb": RECIPE,
}


def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    """The notebook of ``cells``: fixed cell ids, no outputs, the standard Python 3 kernel."""
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index:02d}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    return nbformat.writes(notebook(NOTEBOOKS[name])) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}; run python notebooks/_build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
