"""Config sections of the post-training stages: `sft:`, `dpo:` and `eval:`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from factory.posttrain.benchmark_config import CheckpointSeries, HarnessConfig, MtBenchConfig
from factory.schema import OPERATIONAL, Section, rule

SFT_FORMATS = ("auto", "messages", "sharegpt", "prompt_completion")
DPO_FORMATS = ("auto", "preference")


class DatasetSpec(Section):
    """One training dataset of a mixture."""

    path: Path
    """A .jsonl/.json file, a .parquet file, or a `datasets` folder written by save_to_disk."""
    format: Literal["auto", "messages", "sharegpt", "prompt_completion", "preference"] = "auto"
    """Row layout; auto picks it from the columns (messages, conversations, prompt+completion,
    prompt+chosen+rejected)."""
    weight: float = Field(default=1.0, gt=0)
    """Repeat factor in the mixture: 2.0 takes every row twice, 0.5 a seeded half of the rows."""
    split: str = "train"
    """Split to read when the folder holds a DatasetDict."""


class LoraSettings(Section):
    """LoRA adapters (peft); merged into the saved weights so the output loads with stock transformers."""

    r: int = Field(default=16, ge=1)
    """Adapter rank."""
    alpha: int = Field(default=32, ge=1)
    """Scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the adapter input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt, or every linear layer except the output head."""


class TrainSettings(Section):
    """What SFT and DPO share: model, data, batch, optimizer, LoRA."""

    model: Path | None = None
    """HF model folder to start from; the default is the previous stage's output (see each stage)."""
    tokenizer_dir: Path | None = None
    """Folder with the HF tokenizer and its chat template; defaults to the model folder."""
    output_dir: Path | None = None
    """HF folder to write; defaults to `<run.dir>/<stage>/hf`."""
    datasets: list[DatasetSpec] = Field(min_length=1)
    """Training datasets, mixed by weight."""
    learning_rate: float = Field(gt=0)
    """Peak learning rate (AdamW)."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    """Learning-rate schedule after warmup."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warmup steps."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""
    epochs: float = Field(default=1.0, gt=0)
    """Passes over the mixture (ignored when max_steps is set)."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps."""
    global_batch_size: int = Field(default=8, ge=1)
    """Sequences (or pairs) per optimizer step over all ranks; gradient accumulation fills the gap."""
    micro_batch_size: int = Field(default=1, ge=1)
    """Sequences (or pairs) per rank per forward pass."""
    max_length: int = Field(default=2048, ge=8)
    """Longest tokenized sequence; with packing, the packed block length. Rows longer than this are cut to it
    (counted and logged); a dataset none of whose rows fits is refused, naming its shortest row."""
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """Share of a dataset's rows that may be malformed or break a rule (an unknown role, turns out of order,
    an empty assistant turn; docs/stages/posttrain.md) and are dropped, counted per rule; above it the stage
    stops naming the first bad row."""
    lora: LoraSettings | None = None
    """Train LoRA adapters instead of all weights (merged at save)."""
    router_aux_loss_coef: float | None = Field(default=None, ge=0)
    """MoE load-balancing loss weight; None keeps the model config's own (router logits are always on)."""
    deepspeed: Annotated[Path | None, OPERATIONAL] = None
    """DeepSpeed JSON config (configs/deepspeed/zero3.json: ZeRO-3) for multi-GPU runs under torchrun
    (`python -m factory.launch`); needs `pip install deepspeed` on the GPU nodes."""
    gradient_checkpointing: Annotated[bool, OPERATIONAL] = False
    """Recompute activations in the backward pass (saves memory on GPUs, slows CPU runs)."""
    logging_steps: Annotated[int, OPERATIONAL] = Field(default=1, ge=1)
    """Log (and record in the loss curve) every this many steps."""
    save_steps: Annotated[int | None, OPERATIONAL] = Field(default=None, ge=1)
    """Save a resumable trainer checkpoint every this many steps under `<stage>/trainer/`."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, self.global_batch_size % self.micro_batch_size == 0, f"{prefix}.global_batch_size",
             self.global_batch_size, f"must be a multiple of micro_batch_size ({self.micro_batch_size})")
        return out

    def _format_problems(self, prefix: str, allowed: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for i, d in enumerate(self.datasets):
            rule(out, d.format in allowed, f"{prefix}.datasets[{i}].format", d.format,
                 f"not a format of this stage (allowed: {', '.join(allowed)})")
        return out


class SftConfig(TrainSettings):
    """Supervised fine-tuning with TRL's SFTTrainer (Tanuki and Shisa V2 presets in configs/)."""

    assistant_only_loss: bool = True
    """Train only on assistant tokens (the chat template's {% generation %} spans)."""
    packing: bool = False
    """Pack several conversations into each max_length block (position ids restart per conversation)."""
    neftune_noise_alpha: float | None = Field(default=None, gt=0)
    """NEFTune: uniform noise of this scale on the input embeddings during training (Shisa V2: 5)."""

    def problems(self, prefix: str) -> list[str]:
        return super().problems(prefix) + self._format_problems(prefix, SFT_FORMATS)


class DpoConfig(TrainSettings):
    """Direct preference optimization with TRL's DPOTrainer on prompt/chosen/rejected pairs."""

    beta: float = Field(default=0.1, gt=0)
    """KL strength: the implicit reward is beta x log(pi / pi_ref)."""
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """DPO loss variant (sigmoid is the paper's)."""

    def problems(self, prefix: str) -> list[str]:
        return super().problems(prefix) + self._format_problems(prefix, DPO_FORMATS)


class HeldoutSpec(Section):
    """Held-out text of one language for perplexity."""

    path: Path
    """JSONL with one document per line."""
    language: str
    """Label in the report (ja, en, ...)."""
    text_field: str = "text"
    """JSON key holding the text."""
    max_docs: int = Field(default=200, ge=1)
    """Documents read from the top of the file."""


class EvalConfig(Section):
    """Perplexity per language, generation on prompts, code-switch rate, JGLUE (lm-evaluation-harness),
    Japanese MT-Bench and checkpoints by iteration; prints the llm-jp-eval hand-off command."""

    model: Path | None = None
    """HF folder or Megatron checkpoint root; defaults to the dpo output (`<run.dir>/dpo/hf`)."""
    tokenizer_dir: Path | None = None
    """HF tokenizer for a Megatron checkpoint (exported beside it); defaults to `<run.dir>/tokenizer`."""
    output_dir: Path | None = None
    """Report folder; defaults to `<run.dir>/eval`."""
    heldout: list[HeldoutSpec] = Field(default_factory=list)
    """Held-out text per language for perplexity."""
    prompts: Path | None = None
    """JSONL of prompts to answer: `prompt` (string) or `messages`, optional `language` (default ja)."""
    max_new_tokens: int = Field(default=128, ge=1)
    """Greedy generation length per prompt."""
    max_length: int = Field(default=1024, ge=8)
    """Tokens per document for perplexity (longer ones are cut)."""
    lm_eval_tasks: str = "japanese_leaderboard"
    """lm-evaluation-harness tasks in the printed command."""
    data_dir: Path | None = None
    """Eval data folder with `jglue/` (JGLUE v1.3 files) and `japanese_mt_bench/` (questions, reference answers,
    FastChat judge prompts), read by harness, mt_bench and checkpoints; None: $FACTORY_EVAL_DATA, else the cache
    that `python -m factory.evaldata fetch` fills."""
    harness: HarnessConfig | None = None
    """JGLUE tasks through lm-evaluation-harness: its own leaderboard task definitions and the llm-jp-eval
    protocol."""
    mt_bench: MtBenchConfig | None = None
    """Japanese MT-Bench with an LLM judge."""
    checkpoints: list[CheckpointSeries] = Field(default_factory=list)
    """Megatron checkpoints scored with the harness tasks at chosen iterations (score against tokens)."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        benchmarks = self.harness is not None or self.mt_bench is not None
        rule(out, bool(self.heldout) or self.prompts is not None or benchmarks, prefix, "{}",
             "needs heldout text, a prompts file, harness or mt_bench (nothing to measure)")
        rule(out, self.harness is not None or not self.checkpoints, f"{prefix}.checkpoints", "[...]",
             "needs a harness section (the tasks each checkpoint is scored on)")
        out += self.harness.problems(f"{prefix}.harness") if self.harness else []
        out += self.mt_bench.problems(f"{prefix}.mt_bench") if self.mt_bench else []
        return out
