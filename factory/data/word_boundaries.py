"""Whether a point between Japanese characters falls inside a word, by MeCab (IPADIC) morphemes.

A foreign word that a writer uses in Japanese sits between words ("画像をGIMPで開く", "Linux系"); one spliced
into the text can land inside a word ("右クhelloリック", "管理hello者", "なるはhelloず", "設定helloファイル").
"""

from __future__ import annotations

from functools import lru_cache

# Morphemes that cannot start a word: they bind to the content word before them.
_BOUND = {("名詞", "接尾"), ("名詞", "非自立"), ("動詞", "非自立"), ("形容詞", "非自立"), ("助動詞", "*"),
          ("動詞", "接尾"), ("形容詞", "接尾")}
# Morphemes after which a new word starts: particles and symbols end a phrase.
_PHRASE_END = {"助詞", "記号", "接続詞", "感動詞", "連体詞"}


@lru_cache(maxsize=1)
def _tagger():
    import fugashi
    import ipadic

    return fugashi.GenericTagger(ipadic.MECAB_ARGS)


def inside_word(left: str, right: str, crossing_only: bool = False) -> bool:
    """True when `left + right` (Japanese text around a removed span) has no word boundary between them.

    That is when one morpheme crosses the junction, or (unless `crossing_only`) when `right` starts with a
    bound morpheme (suffix, auxiliary, dependent noun or verb) attached to a content word in `left`, or when
    nouns on both sides make a compound (設定|ファイル).
    """
    cut, offset = len(left), 0
    before = after = None
    for node in _tagger()(left + right):
        start = (left + right).index(node.surface, offset) if node.surface else offset
        end = offset = start + len(node.surface)
        if start < cut < end:
            return node.feature[0] in ("動詞", "形容詞", "助動詞") or not _between_particles(left, right)
        if end == cut:
            before = tuple(node.feature[:2])
        elif start == cut and after is None:
            after = tuple(node.feature[:2])
    if crossing_only or before is None or after is None:
        return False
    bound_to_left = before[0] not in _PHRASE_END or before == ("助詞", "接続助詞")
    compound = before[0] == after[0] == "名詞" and "数" not in (before[1], after[1])
    return compound or after in _BOUND and bound_to_left


def _between_particles(left: str, right: str) -> bool:
    """Particles on both sides merge across the cut into a particle or noun by accident (の|で -> ので,
    や|から -> 輩): no word is cut."""
    last = list(_tagger()(left))[-1].feature[0]
    first = next(iter(_tagger()(right))).feature[0]
    return last == "助詞" and first in ("助詞", "接続詞")


def heads_a_compound(right: str) -> bool:
    """True when `right` (the Japanese text after a foreign word) starts with a noun that can head a compound:
    a term written in Latin letters names the thing the noun says (rulesファイル, rootシェル, dateコマンド)."""
    nodes = list(_tagger()(right))[:2]
    if not nodes or nodes[0].feature[0] != "名詞" or nodes[0].feature[1] in ("非自立", "接尾", "代名詞"):
        return False
    verb = nodes[0].feature[1] == "サ変接続" and len(nodes) > 1 and nodes[1].feature[6] == "する"
    return not verb  # 展開する is a verb: a word before it is no name of a thing
