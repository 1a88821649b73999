"""The report's sections: each reads artifacts, writes its figures into the report folder and returns
Markdown lines; a stage that left nothing behind is reported as such."""

from __future__ import annotations

from pathlib import Path

from factory import registry
from factory.posttrain import benchmark_report
from factory.records import read_jsonl
from factory.report import plots
from factory.report.sources import Artifacts, read_json


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cell(v) for v in row) + " |" for row in rows], ""]


def _missing(what: str) -> list[str]:
    return [f"_{what}: not found in this run._", ""]


def stages(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Stages", ""]
    records = (arts.pipeline or {}).get("stages", {})
    names = [s.name for s in registry.CHAIN if s.name in records or s.name in arts.manifests]
    rows = []
    for name in names:
        rec, man = records.get(name, {}), arts.manifests.get(name, {})
        rows.append([name, rec.get("status", "done" if man else "-"), man.get("wall_seconds", "-"),
                     rec.get("ended_at", man.get("ended_at", "-")), str(arts.dirs.get(name, "-"))])
    return lines + _table(["stage", "status", "wall s (last run)", "finished", "output"], rows)


def tokenizer(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Tokenizer compression (held-out lines)", ""]
    path = arts.file("tokenizer", "report.json")
    if path is None:
        return lines + _missing("tokenizer report.json")
    rep = read_json(path)
    held, tok = rep["heldout"], rep["tokenizer"]
    rows = [[lang, v["lines"], v["chars"], v["tokens"], v["chars_per_token"], v["bytes_per_token"],
             v["boundary_crossing_rate"]] for lang, v in sorted(held.get("languages", {}).items())]
    rows.append(["all", held["lines"], "", "", held["chars_per_token"], held["bytes_per_token"],
                 held["boundary_crossing_rate"]])
    lines.append(f"{tok['model_type']}, vocab {tok['vocab_size']:,}, {tok['granularity']} pretokenization "
                 f"({tok.get('dictionary', '-')}); round-trip failures {held['round_trip_failures']}, "
                 f"byte-fallback rate {held['byte_fallback_rate']:.4g}.")
    return lines + [""] + _table(["language", "lines", "chars", "tokens", "chars/token", "bytes/token",
                                  "MeCab boundary crossing"], rows)


def data(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Data funnel", ""]
    m = arts.metrics("data")
    if "in" not in m:
        return lines + _missing("data manifest")
    counts = {"in": m["in"], "kept": m["kept"],
              **{k: v for k, v in m.items() if k.startswith("rejected.") and v}}
    plots.funnel(counts, out / "data_funnel.png")
    rows = [[k, v, f"{100 * v / max(m['in'], 1):.1f}%"] for k, v in counts.items()]
    lines += ["![data funnel](data_funnel.png)", ""] + _table(["records", "count", "share of in"], rows)
    p = arts.metrics("pack")
    if p:
        lines += [f"Packed: {p.get('documents', 0):,} documents, {p.get('tokens', 0):,} tokens.", ""]
    return lines


def synthetic(arts: Artifacts, out: Path) -> list[str]:
    """The synth stage's funnel: generated jobs and judged pairs, then what each training use kept."""
    m = arts.metrics("synth")
    if "jobs_planned" not in m:
        return []
    rows = [[k, m[k]] for k in ("jobs_planned", "jobs_generated", "pairs_decided", "pairs_undecided",
                                "pretraining_candidates", "pretraining_kept", "pretraining_tokens", "sft_rows",
                                "dpo_rows") if k in m]
    rows += [[k, v] for k, v in m.items() if "_rejected" in k and v]
    return ["## Synthetic data", ""] + _table(["synth", "count"], rows)


def training(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Pretraining and continued pretraining", ""]
    curves = {s: read_jsonl(arts.dirs[s] / "metrics.jsonl") for s in ("pretrain", "cpt") if s in arts.dirs}
    curves = {s: c for s, c in curves.items() if c}
    if not curves:
        return lines + _missing("pretrain/cpt metrics.jsonl")
    plots.training_curves(curves, "loss", "loss (per token)", out / "loss.png")
    plots.training_curves(curves, "lr", "learning rate", out / "lr.png")
    lines += ["Loss against tokens seen; a dotted line marks where a stage continues the previous one, a dashed "
              "purple line a switch of blend phase inside a stage.", "",
              "![loss](loss.png)", "", "![learning rate](lr.png)", ""]
    lines += phase_shares(arts, curves)
    rows = []
    for s in curves:
        m = arts.metrics(s)
        lineage_tokens = m.get("lineage_tokens", m.get("tokens_seen_total", "-"))  # the latter: older manifests
        rows.append([s, m.get("steps", "-"), lineage_tokens, m.get("final_loss", "-"),
                     m.get("final_valid_loss", "-"), m.get("final_lr", "-"), m.get("mean_tokens_per_s", "-")])
    lines += _table(["stage", "steps", "lineage tokens", "final loss", "final valid loss", "final LR",
                     "tokens/s"], rows)
    moe = next((c for c in reversed(list(curves.values())) if any(r.get("moe_tokens_per_expert") for r in c)), None)
    if moe:
        plots.expert_load(moe, out / "expert_load.png")
        lines += ["### Expert load", "", "Share of routed tokens per expert at each logged step, one panel per layer.",
                  "", "![expert load](expert_load.png)", ""]
    return lines


def phase_shares(arts: Artifacts, curves: dict[str, list[dict]]) -> list[str]:
    """Per training stage and blend phase: the tokens trained and the synthetic share of the phase's blend."""
    rows = []
    for s, records in curves.items():
        tokens_per_iter = _tokens_per_iter(records)
        phases: dict[str, int] = {}
        previous = 0
        for r in records:
            phases[r.get("phase", "-")] = phases.get(r.get("phase", "-"), 0) + (r["iteration"] - previous)
            previous = r["iteration"]
        for name, iterations in phases.items():
            rows.append([s, name, iterations * tokens_per_iter if tokens_per_iter else "-", _synthetic_share(arts, name)])
    if not rows:
        return []
    return ["### Blend phases", "", "Tokens trained per phase; the synthetic share is that of the datasets the "
            "phase's blend draws from whose name starts with `synth` (by weight).", ""] + \
        _table(["stage", "phase", "tokens", "synthetic share"], rows)


def _tokens_per_iter(records: list[dict]) -> int | None:
    pairs = [(a, b) for a, b in zip(records, records[1:]) if b["iteration"] > a["iteration"] and "tokens" in a]
    return (pairs[0][1]["tokens"] - pairs[0][0]["tokens"]) // (pairs[0][1]["iteration"] - pairs[0][0]["iteration"]) \
        if pairs else None


def _synthetic_share(arts: Artifacts, phase: str) -> object:
    for stage in ("pack", "synth"):
        path = arts.file(stage, "blend.json")
        blend = read_json(path) if path else None
        for p in (blend or {}).get("phases", []):
            if p["name"] == phase:
                names = [Path(x).name for x in p["prefixes"]]
                return round(sum(w for n, w in zip(names, p["weights"]) if n.startswith("synth")), 4)
    return "-"


def verification(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Verification of transforms (probe-batch logits)", ""]
    rows, bars = [], []
    checks = {"upcycle": arts.section("upcycle", "upcycle").get("tolerance"),
              "export": arts.section("export", "export").get("probe", {}).get("tolerance"),
              "import": arts.section("import", "hf_import").get("probe", {}).get("tolerance")}
    for stage, tol in checks.items():
        m = arts.metrics(stage)
        if "max_abs_logit_diff" in m:
            rows.append([stage, m["max_abs_logit_diff"], m.get("mean_abs_logit_diff", "-"), tol or "-",
                         m.get("architecture") or arts.section("upcycle", "upcycle").get("mode", "-")])
            bars.append((stage, m["max_abs_logit_diff"], tol))
    if not rows:
        return lines + _missing("upcycle/export verification figures")
    plots.verification(bars, out / "verification.png")
    lines += ["![verification](verification.png)", ""]
    return lines + _table(["transform", "max abs logit diff", "mean abs logit diff", "tolerance", "mode / architecture"], rows)


def posttrain(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Post-training", ""]
    curves = {s: read_json(arts.dirs[s] / "loss_curve.json") for s in ("sft", "dpo") if arts.file(s, "loss_curve.json")}
    if not curves:
        return lines + _missing("sft/dpo loss_curve.json")
    plots.posttrain(curves, out / "posttrain.png")
    rows = [[s, arts.metrics(s).get("steps", "-"), arts.metrics(s).get("first_loss", "-"),
             arts.metrics(s).get("last_loss", "-"), arts.metrics(s).get("last_reward_margin", "-")] for s in curves]
    return lines + ["![post-training](posttrain.png)", ""] + _table(
        ["stage", "steps", "first loss", "last loss", "last reward margin"], rows)


def evaluation(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Evaluation", ""]
    m = arts.metrics("eval")
    if not m:
        return lines + _missing("eval manifest")
    rows = [[k.removeprefix("perplexity."), v] for k, v in m.items() if k.startswith("perplexity.")]
    lines += _table(["language", "perplexity"], rows)
    if "code_switch_rate" in m:
        lines += [f"Code-switch rate of Japanese answers: {m['code_switch_rate']} "
                  f"({m.get('code_switch_flagged', 0)} of {m.get('japanese_answers', 0)} flagged).", ""]
    report = arts.file("eval", "report.md")
    return lines + ([f"Full report with generations: `{report}`.", ""] if report else [])


def benchmarks(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Benchmarks", ""]
    path = arts.file("eval", "report.json")
    rep = read_json(path) if path else None
    if not rep or not any(rep.get(k) for k in ("harness", "mt_bench", "checkpoints")):
        return lines + _missing("eval benchmarks (eval.harness, eval.mt_bench, eval.checkpoints)")
    if rep.get("harness"):
        lines += [f"JGLUE v1.3 validation through lm-evaluation-harness on `{rep['model']}`, under each scoring "
                  f"protocol. Chance is uniform guessing, majority class always giving the most frequent answer of "
                  f"the examples scored; `near chance` means within {benchmark_report.NEAR_CHANCE:g} standard errors "
                  f"of chance.", ""]
        lines += benchmark_report.harness_table(rep["harness"], rep.get("harness_protocols"))
    if rep.get("mt_bench"):
        lines += ["### Japanese MT-Bench", ""] + benchmark_report.mt_bench_lines(rep["mt_bench"])
    if rep.get("checkpoints"):
        plots.scores_vs_tokens(rep["checkpoints"], out / "scores_vs_tokens.png")
        lines += ["### Checkpoints: scores against tokens seen", "",
                  "Each checkpoint exported to a temporary HF folder (verified by logits) and scored with the "
                  "same tasks; dense and MoE series share the axis.", "",
                  "![scores against tokens](scores_vs_tokens.png)", ""]
        lines += benchmark_report.checkpoint_table(rep["checkpoints"])
    return lines


def hf_folder(arts: Artifacts, out: Path) -> list[str]:
    lines = ["## Hugging Face folder", ""]
    if "export" not in arts.dirs:
        return lines + _missing("export output")
    m = arts.metrics("export")
    return lines + [f"`{arts.dirs['export']}`: {m.get('architecture', '?')} layout, {m.get('shards', '?')} shard(s), "
                    f"{m.get('bytes', 0) / 1e6:.1f} MB; loads with `AutoModelForCausalLM.from_pretrained`.", ""]


SECTIONS = (stages, tokenizer, data, synthetic, training, verification, hf_folder, posttrain, evaluation, benchmarks)
