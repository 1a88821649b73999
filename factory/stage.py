"""`python -m factory.stage VERB --config FILE [key=value ...] [--dry-run]`: one verb per stage."""

from __future__ import annotations

import argparse
import sys

from factory.errors import FactoryError, report
from factory.runner import StageSpec

STAGES: dict[str, StageSpec] = {
    "tokenizer": StageSpec("train a MeCab-pretokenized SentencePiece tokenizer + HF export + report",
                           module="tokenizer.stage"),
    "data": StageSpec("ingest, filter and dedup corpora into JSONL", module="factory.data.stage"),
    "synth": StageSpec("generate synthetic data (persona x seed document) from a chat endpoint",
                       module="factory.data.synth.stage"),
    "pack": StageSpec("tokenize and pack JSONL into Megatron indexed datasets + blends",
                      module="factory.data.pack"),
    "pretrain": StageSpec("pretrain a dense or MoE model on Megatron-Core",
                          module="factory.train.pretrain_stage"),
    "upcycle": StageSpec("turn a dense checkpoint into a verified-equal MoE checkpoint",
                         module="factory.upcycle.stage"),
    "cpt": StageSpec("continue pretraining from a checkpoint", module="factory.train.cpt_stage"),
    "export": StageSpec("Megatron checkpoint -> Hugging Face folder, verified by logits",
                        module="factory.convert.export_stage"),
    "import": StageSpec("Hugging Face folder -> Megatron checkpoint, verified by logits",
                        module="factory.convert.import_stage"),
    "sft": StageSpec("supervised fine-tuning on TRL", module="factory.posttrain.sft_stage"),
    "dpo": StageSpec("direct preference optimization on TRL", module="factory.posttrain.dpo_stage"),
    "eval": StageSpec("perplexity, code-switch rate, JGLUE (lm-evaluation-harness), Japanese MT-Bench",
                      module="factory.posttrain.eval_stage"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m factory.stage",
        description="Run one stage of the Japanese-first LLM factory.",
        epilog="Each verb takes --config FILE, dotted key=value overrides and --dry-run.")
    verbs = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, spec in STAGES.items():
        sub = verbs.add_parser(name, help=spec.help, description=spec.help)
        sub.add_argument("--config", required=True, help="YAML config (see configs/)")
        sub.add_argument("--dry-run", action="store_true",
                         help="print the resolved config, plan and parameter counts; run nothing")
        sub.add_argument("--log-level", default="INFO")
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from factory.config import load_config
    from factory.logs import setup_logging
    from factory.runner import run_stage

    setup_logging(args.log_level)
    try:
        cfg = load_config(args.config, args.overrides)
        run_stage(args.stage, STAGES[args.stage], cfg, dry_run=args.dry_run)
    except FactoryError as e:
        return report(e)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
