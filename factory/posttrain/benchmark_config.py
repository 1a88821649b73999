"""Config sections of the eval stage's benchmarks: JGLUE through lm-evaluation-harness, Japanese MT-Bench
with an LLM judge, and scoring Megatron checkpoints at chosen iterations."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from factory.posttrain.jglue import TASKS
from factory.schema import Section, rule

LEADERBOARD = "lm-evaluation-harness"
"""The scoring protocol of lm-evaluation-harness's japanese_leaderboard tasks (log-likelihood of each choice)."""
PROTOCOLS = (LEADERBOARD, "llm-jp-eval")


class HarnessConfig(Section):
    """JGLUE tasks run in-process by lm-evaluation-harness on the HF folder."""

    tasks: list[str] = Field(default_factory=lambda: list(TASKS), min_length=1)
    """Tasks to run: jcommonsenseqa (accuracy), jnli (accuracy), jsts (Pearson/Spearman), jsquad (exact match)."""
    protocols: list[Literal["lm-evaluation-harness", "llm-jp-eval"]] = Field(
        default_factory=lambda: list(PROTOCOLS), min_length=1)
    """Scoring protocols: lm-evaluation-harness (its japanese_leaderboard task definitions: log-likelihood of
    each choice) and llm-jp-eval (generation and exact match; jcommonsenseqa, jnli and jsquad only)."""
    num_fewshot: int | None = Field(default=None, ge=0)
    """Few-shot examples per prompt, for every task and protocol; None: each one's own default (leaderboard
    3, 3, 2; the factory's JSTS 3; llm-jp-eval 4). Shots come from the train split where the eval data folder
    holds it, else from the other validation examples (recorded per task)."""
    limit: int | None = Field(default=None, ge=1)
    """Evaluate only the first N examples of each task (quick runs); None: the whole validation split."""
    batch_size: int = Field(default=8, ge=1)
    """Requests per forward pass (HF backend)."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """lm-eval model backend; auto: vLLM when it is installed and the runtime device is CUDA, else HF."""
    chat_template: bool = False
    """Wrap prompts in the tokenizer's chat template (the leaderboard scores base models without one)."""
    max_gen_tokens: int | None = Field(default=None, ge=1)
    """Token budget of a JSQuAD answer under lm-evaluation-harness; None: its task's own (the definition sets
    none, so lm-eval's model default, 256 for HF). A model whose context is not larger needs a smaller one.
    llm-jp-eval's budgets are its own (its `output_length`)."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        for name in self.tasks:
            rule(out, name in TASKS, f"{prefix}.tasks", name, f"not a task (supported: {', '.join(TASKS)})")
        rule(out, len(set(self.tasks)) == len(self.tasks), f"{prefix}.tasks", self.tasks, "tasks must be unique")
        rule(out, len(set(self.protocols)) == len(self.protocols), f"{prefix}.protocols", self.protocols,
             "protocols must be unique")
        return out


class JudgeConfig(Section):
    """The MT-Bench judge: any OpenAI-compatible endpoint, or a local HF folder served on loopback."""

    base_url: str | None = Field(default=None, pattern=r"^https?://")
    """Endpoint root including `/v1` (vLLM, SGLang, a hosted API)."""
    model: str | None = None
    """Judge model name sent with each request and recorded (required with base_url)."""
    api_key_env: str | None = None
    """Environment variable holding the API key (sent as a Bearer token)."""
    serve: Path | Literal["self"] | None = None
    """HF folder to serve as the judge on 127.0.0.1 for the stage's duration; `self`: the model under test."""
    concurrency: int = Field(default=4, ge=1)
    """Judge requests in flight at once."""
    max_tokens: int = Field(default=2048, ge=1)
    """Token budget of a judgement (FastChat: 2048)."""
    max_retries: int = Field(default=5, ge=0)
    """Retries per request on connection errors, timeouts, 429 and 5xx, then the stage stops."""
    backoff_seconds: float = Field(default=1.0, ge=0)
    """First retry delay; doubles on each retry (with jitter)."""
    timeout_seconds: float = Field(default=300.0, gt=0)
    """Per-request timeout."""
    prompts: Path | None = None
    """Judge prompts in FastChat's layout (JSON Lines of name, system_prompt, prompt_template), e.g. the Japanese
    fork's Japanese ones; it must define single-v1, single-math-v1 and their -multi-turn forms. None: FastChat's
    own `japanese_mt_bench/judge_prompts.jsonl` in the eval data folder."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, (self.base_url is None) != (self.serve is None), prefix, f"base_url={self.base_url}, "
             f"serve={self.serve}", "give exactly one of base_url (an endpoint) or serve (a local HF folder)")
        rule(out, self.base_url is None or bool(self.model), f"{prefix}.model", self.model,
             "required with base_url (the judge model's name)")
        return out


class MtBenchConfig(Section):
    """Japanese MT-Bench: two-turn answers with the chat template, single-answer grading by a judge."""

    questions: int | list[int] | None = None
    """The first N of the 80 questions, or a list of question ids (e.g. one per category); None: all."""
    max_new_tokens: int = Field(default=1024, ge=1)
    """Token budget of each answer turn (FastChat: 1024); less where the context leaves less after the prompt,
    which is always kept whole (a turn whose prompt fills the context is refused and counted)."""
    samples: int = Field(default=1, ge=1)
    """Answers per question (FastChat's num_choices), each at its category's temperature; the report gives the
    mean over them and the spread (standard deviation of the overall score across the samples)."""
    judge: JudgeConfig
    """Who grades the answers."""

    def problems(self, prefix: str) -> list[str]:
        out = self.judge.problems(f"{prefix}.judge")
        count = len(self.questions) if isinstance(self.questions, list) else self.questions
        rule(out, count is None or count >= 1, f"{prefix}.questions", self.questions, "must name at least one question")
        return out


class CheckpointSeries(Section):
    """A Megatron checkpoint folder to score at chosen iterations (exported to a temporary HF folder each)."""

    path: Path
    """Checkpoint root (with latest_checkpointed_iteration.txt), e.g. `<run.dir>/pretrain/checkpoints`."""
    iterations: list[int] | Literal["all"] = "all"
    """Iterations to score; `all`: every iter_NNNNNNN folder present."""
    label: str | None = None
    """Series name in the report; default: the stage folder and dense/MoE, e.g. `cpt (MoE)`."""
