"""Exact dedup on a normalized-text hash and near dedup with datasketch's MinHash LSH."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from factory.data.config import DedupConfig

if TYPE_CHECKING:
    from datasketch import MinHash

# datasketch (and the scipy it imports) is imported where first used: the stage registry imports the data
# stage at every start-up, and only a run with near dedup needs it.

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the text exact dedup compares."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_key(text: str) -> bytes:
    """16-byte hash of the normalized text."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).digest()


@lru_cache(maxsize=4)
def _template(num_perm: int, seed: int) -> MinHash:
    from datasketch import MinHash

    # Building the permutations is the slow part of a MinHash; share them across documents.
    return MinHash(num_perm=num_perm, seed=seed)


def _minhash(cfg: DedupConfig, hashvalues: np.ndarray | None = None) -> MinHash:
    from datasketch import MinHash

    t = _template(cfg.num_perm, cfg.seed)
    return MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashvalues=hashvalues, permutations=t.permutations,
                   scheme=t.scheme)


def signature(text: str, cfg: DedupConfig) -> np.ndarray:
    """MinHash values of the text's character shingles (whitespace removed, so layout does not matter)."""
    flat = _SPACE.sub("", normalize(text))
    k = cfg.shingle_size
    grams = {flat[i:i + k].encode("utf-8") for i in range(max(1, len(flat) - k + 1))}
    m = _minhash(cfg)
    m.update_batch(list(grams))
    return m.hashvalues


class Deduper:
    """Remembers kept documents; `check` says whether a new one repeats one of them."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.seen: set[bytes] = set()
        from datasketch import MinHashLSH

        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm) if cfg.near else None

    def check(self, key: bytes, hashvalues: np.ndarray | None, source: str) -> tuple[str, str] | None:
        """(reason, detail) when the document is a duplicate; otherwise remember it and return None."""
        if self.cfg.exact and key in self.seen:
            return "exact_dup", "normalized text seen before"
        if self.lsh is not None and hashvalues is not None:
            m = _minhash(self.cfg, hashvalues=hashvalues)
            hits = self.lsh.query(m)
            if hits:
                return "near_dup", f"near duplicate of {min(hits)}"
            self.lsh.insert(source, m, check_duplication=False)
        self.seen.add(key)
        return None
