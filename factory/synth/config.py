"""Config section of the `synth` stage: endpoint, personas, seed documents, tasks, retries, preference pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from factory.data.config import FilterConfig, LangMixConfig
from factory.schema import OPERATIONAL, Section, rule

TaskType = Literal["qa", "summary", "rewrite", "dialogue"]


class SeedDocs(Section):
    """JSONL seed documents; each prompt pairs one persona with one document."""

    path: Path
    """JSONL file, one document per line (e.g. the data stage's kept.jsonl)."""
    text_field: str = "text"
    """Field holding the document text."""
    id_field: str = "id"
    """Field holding a unique document id (part of every record id, so it must be stable)."""
    max_chars: int = Field(default=2000, ge=1)
    """Documents are cut to this many characters inside prompts."""
    limit: int | None = Field(default=None, ge=1)
    """Use only the first N documents (None: all)."""


class PreferenceConfig(Section):
    """DPO pairs: two samples per prompt, judged by an LLM into prompt/chosen/rejected."""

    enabled: bool = False
    """Judge pairs after generation (needs samples_per_prompt >= 2)."""
    judge_model: str | None = None
    """Model name for the judge; defaults to `synth.model`."""
    judge_base_url: str | None = None
    """Endpoint of the judge; defaults to `synth.base_url`."""
    max_tokens: int = Field(default=256, ge=1)
    """Token budget of a judgement."""
    verdict_only: bool = False
    """Ask for the verdict alone under constrained decoding (`guided_choice` [[A]] / [[B]], as vLLM serves it):
    no reasoning, but every pair is decided; for judges too small to follow the format."""


class SynthTraining(Section):
    """The generated records as training data: pretraining text (the data stage's filters, then packed as its
    own dataset for a blend phase), SFT conversations and DPO pairs (both screened by the code-switch detector)."""

    pretraining_tasks: list[TaskType] = Field(default_factory=lambda: ["summary", "rewrite"])
    """Tasks whose completions become pretraining text."""
    sft_tasks: list[TaskType] = Field(default_factory=lambda: ["qa", "dialogue"])
    """Tasks whose (prompt, completion) become SFT conversations (qa and dialogue parsed into turns when
    their format allows)."""
    filters: FilterConfig = Field(default_factory=FilterConfig)
    """The data stage's quality filters applied to the pretraining text."""
    langmix: LangMixConfig = Field(default_factory=LangMixConfig)
    """The language-mixing detector's thresholds (pretraining text, SFT answers, DPO chosen answers)."""
    tokenizer_dir: Path | None = None
    """Tokenizer to pack the pretraining text with; defaults to the tokenizer stage's output."""


class VllmServe(Section):
    """A vLLM OpenAI server that the Slurm job of `synth` starts on its node's GPUs before the client
    (`python -m factory.launch slurm synth`); the client is pointed at it with `base_url` and `model`."""

    model: str
    """What `vllm serve` loads: a local HF folder (e.g. `<run.dir>/export/hf`) or a name in the node's HF cache."""
    served_model_name: str = "teacher"
    """The name requests use and records carry (`synth.model`)."""
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    """`--tensor-parallel-size`; defaults to every GPU of the node (`launch.gpus_per_node`)."""
    port: int = Field(default=8000, ge=1024, le=65535)
    """Port on 127.0.0.1 of the node."""
    args: list[str] = Field(default_factory=list)
    """Extra `vllm serve` arguments, e.g. [--max-model-len, "8192", --gpu-memory-utilization, "0.9"]."""
    startup_timeout_seconds: Annotated[int, OPERATIONAL] = Field(default=1800, ge=10)
    """How long the job waits for `/v1/models` to answer before it fails."""


class SynthConfig(Section):
    """Generate persona x seed document data from any OpenAI-compatible `/v1/chat/completions` endpoint."""

    base_url: str | None = Field(default=None, pattern=r"^https?://")
    """Endpoint root including `/v1`, e.g. `http://127.0.0.1:8000/v1` (vLLM, SGLang, hosted APIs)."""
    teacher: Path | None = None
    """Instead of `base_url`: an HF folder or Megatron checkpoint (e.g. `<run.dir>/pretrain/checkpoints`, exported
    to a temporary verified HF folder) served on 127.0.0.1 as the teacher and judge for the stage's duration."""
    model: str | None = None
    """Model name sent in each request and recorded in each record; defaults to the teacher's path."""
    api_key_env: Annotated[str | None, OPERATIONAL] = None
    """Environment variable holding the API key (sent as a Bearer token); None: no key."""
    personas: list[str] = Field(default_factory=list)
    """Inline personas, e.g. '地方の高校で物理を教える教師'."""
    personas_file: Path | None = None
    """Text file with one persona per line (blank lines ignored); used instead of `personas`."""
    seeds: SeedDocs
    """Seed documents."""
    tasks: list[TaskType] = Field(default_factory=lambda: ["qa"], min_length=1)
    """Task types: qa, summary, rewrite, dialogue."""
    samples_per_prompt: int = Field(default=1, ge=1)
    """Samples per (persona, seed document, task); 2 or more for preference pairs."""
    concurrency: Annotated[int, OPERATIONAL] = Field(default=8, ge=1)
    """Requests in flight at once."""
    max_retries: Annotated[int, OPERATIONAL] = Field(default=5, ge=0)
    """Retries per request on connection errors, timeouts, 429 and 5xx, then the run stops."""
    backoff_seconds: Annotated[float, OPERATIONAL] = Field(default=1.0, ge=0)
    """First retry delay; doubles on each retry (with jitter), capped by `backoff_max_seconds`."""
    backoff_max_seconds: Annotated[float, OPERATIONAL] = Field(default=60.0, ge=0)
    """Longest delay between retries."""
    timeout_seconds: Annotated[float, OPERATIONAL] = Field(default=120.0, gt=0)
    """Per-request timeout."""
    temperature: float = Field(default=0.8, ge=0)
    """Sampling temperature."""
    max_tokens: int = Field(default=512, ge=1)
    """Token budget of each completion."""
    output_dir: Path | None = None
    """Defaults to `<run.dir>/synth`."""
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    """DPO preference pairs."""
    training: SynthTraining | None = None
    """Write training data from the records (pretraining text packed for a blend phase, SFT, DPO)."""
    serve: VllmServe | None = None
    """A vLLM server started by the stage's Slurm job (docs/stages/synth.md); the job sets `base_url`/`model`."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        if self.serve is not None:
            rule(out, self.teacher is None, f"{prefix}.serve", self.serve.model, "give serve or teacher, not both")
        else:
            rule(out, (self.base_url is None) != (self.teacher is None), f"{prefix}.base_url",
                 f"{self.base_url}, teacher={self.teacher}", "give exactly one of base_url (an endpoint) or teacher")
            rule(out, self.teacher is not None or self.model is not None, f"{prefix}.model", self.model,
                 "required with base_url")
        rule(out, bool(self.personas) != (self.personas_file is not None), f"{prefix}.personas",
             self.personas or self.personas_file, "give exactly one of personas or personas_file")
        dupes = sorted({p for p in self.personas if self.personas.count(p) > 1})
        rule(out, not dupes, f"{prefix}.personas", dupes, "personas must be unique")
        rule(out, len(set(self.tasks)) == len(self.tasks), f"{prefix}.tasks", self.tasks, "tasks must be unique")
        rule(out, not self.preference.enabled or self.samples_per_prompt >= 2,
             f"{prefix}.samples_per_prompt", self.samples_per_prompt, "preference pairs need at least 2")
        return out
