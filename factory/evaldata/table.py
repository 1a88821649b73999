"""The eval data files: where each comes from upstream (repository, commit, path), its pinned checksums, its
licence, and where it lies in the local folder the eval stage reads.

Every checksum here was computed from the upstream file at the pinned commit, never typed in: the sha256 from
an offline mirror of those files, the git blob id from the upstream repository's tree at the commit
(`git ls-tree <commit> <path>`). The JNLI and JSQuAD train splits were not in the mirror, so only their git
blob ids are pinned (SHA-1 of `blob <size>\\0<content>`, which also fixes the size).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """An upstream repository at a pinned commit."""

    repository: str
    """owner/name on GitHub."""
    commit: str
    """Full commit hash the files are read at."""
    date: str
    """Commit date (for the README)."""
    licence: str
    """SPDX identifier of the files' licence."""


JGLUE = Source("yahoojapan/JGLUE", "6f071c09316baae89c3d083a90985b4b1cb9968c", "2025-03-31", "CC-BY-SA-4.0")
"""JGLUE v1.3 (the v1.3.0 release merge)."""
FASTCHAT = Source("lm-sys/FastChat", "3e0e7f15f05ad933691bf0afd49c5eb5b58999b0", "2023-12-23", "Apache-2.0")
"""Japanese MT-Bench: the wandb/nejumi merge of FastChat, reachable in lm-sys/FastChat through pull request 2851."""


@dataclass(frozen=True)
class EvalFile:
    """One file of the eval data folder."""

    local: str
    """Path inside the eval data folder (the layout the eval stage reads)."""
    source: Source
    upstream: str
    """Path inside the upstream repository at `source.commit`."""
    git_blob: str
    """The upstream tree's blob id for the file."""
    sha256: str | None
    """sha256 of the file; None where no copy was at hand to compute it (the git blob id still pins it)."""
    required: bool = True
    """Always read by the eval stage; the train splits (its few-shot examples where present, else the other
    validation examples) may be absent from a mirror."""


def _jglue(task: str, split: str, git_blob: str, sha256: str | None) -> EvalFile:
    return EvalFile(f"jglue/{task}-{split}-v1.3.json", JGLUE, f"datasets/{task}-v1.3/{split}-v1.3.json", git_blob,
                    sha256, required=split == "valid")


FILES: tuple[EvalFile, ...] = (
    EvalFile("jglue/LICENSE", JGLUE, "LICENSE", "a73481c4be14b761eddf04cb18317cbc63416dc6",
             "3b2890eacd851373001c4a14623458e3adaf1b1967939aa9c38a318e28d61c00"),
    _jglue("jcommonsenseqa", "valid", "1099679e5bc9a4d70f9ae6a6e7b41dca84897f99",
           "0d8d76f3bfa0d174866939882faccdd01fbc2bcd5a76c43748ba0c40a7b3b8d4"),
    _jglue("jnli", "valid", "bd1cf766540d75fb189a87a9a7c8e1a31e1565e0",
           "ca0353efc7c2eebfb6de4e13f16295053c8b1ee65e7b0849190c90426fbc495f"),
    _jglue("jsts", "valid", "8374a83973edc34788ecf0b3d52ae73048f518fe",
           "7c0bdcb381179f01096c635d058853d96da1e1248d23fe3f5c2beed5dc2d9b1a"),
    _jglue("jsquad", "valid", "bcde414e0b7131607bb1fa2c4542dd888f68771a",
           "fb0a57a35281ff03bbe7f0e878cff5b577985fbe6fcb242e7e8ddb63d1c0ab11"),
    _jglue("jcommonsenseqa", "train", "4d11d31788cb22850b0a88d41a1ffdd13e8a180b",
           "9b55fae5ecb3aedd6f8ce5bc09196c3b629864668ec6c18eee4d65c0aa48229e"),
    _jglue("jnli", "train", "14d9948a80dc585cfd53eb358594b0722b937802", None),
    _jglue("jsts", "train", "642d6e1b4de4d4429a651decc4d3b7c2eb09b34f",
           "db6bd653270ac9786759920413a48973164d322998f34dd4ae32202af5e66969"),
    _jglue("jsquad", "train", "87b42821ac5487246164483d625b928bf8904344", None),
    EvalFile("japanese_mt_bench/LICENSE", FASTCHAT, "LICENSE", "261eeb9e9f8b2b4b0d119366dda99c6fd7d35c64",
             "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"),
    EvalFile("japanese_mt_bench/question.jsonl", FASTCHAT, "fastchat/llm_judge/data/japanese_mt_bench/question.jsonl",
             "50e1599a7f4f47f2d8a333d97968163a0bbcf0b0",
             "4ee861355679a95903beb3962ec413f5e2f676182b7e2ac0f5c5b0d4611bc94b"),
    EvalFile("japanese_mt_bench/reference_answer_gpt-4.jsonl", FASTCHAT,
             "fastchat/llm_judge/data/japanese_mt_bench/reference_answer/gpt-4.jsonl",
             "202bf38ce5fd3933007404c1a3943f7fb924faaa",
             "0631685c4ebc66390970588b658e4d19047fafb0a00ec1d841616686c07b0d6b"),
    EvalFile("japanese_mt_bench/judge_prompts.jsonl", FASTCHAT, "fastchat/llm_judge/data/judge_prompts.jsonl",
             "4ec7524cbcdf308766fddc52df31e203316ad75f",
             "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6"),
)
"""Every file `python -m factory.evaldata fetch` installs, in the order it fetches them."""


def url(base: str, entry: EvalFile) -> str:
    """The raw file at its pinned commit, under `base` (https://raw.githubusercontent.com or a stand-in)."""
    return f"{base.rstrip('/')}/{entry.source.repository}/{entry.source.commit}/{entry.upstream}"
