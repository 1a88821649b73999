"""Persona x seed document prompt templates (Persona-Hub style), Japanese first, one per task type.

A template's name carries its version; it is part of every record id, so editing the wording of a
template must come with a new version, or resumed runs would mix outputs of two wordings.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM = "あなたは日本語で正確かつ自然な文章を書くアシスタントです。指示された人物になりきって書いてください。"


@dataclass(frozen=True)
class Template:
    """A system prompt and a user prompt with `{slot}` fields; `name` ends in its version."""

    name: str
    user: str
    system: str = SYSTEM

    def messages(self, **slots: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user.format(**slots)}]


TEMPLATES: dict[str, Template] = {t.name.split("-v")[0]: t for t in (
    Template("qa-v1",
             "あなたは「{persona}」です。以下の文書を読み、この人物が本当に抱きそうな質問を一つ日本語で作り、"
             "文書の内容に基づいて丁寧に答えてください。\n"
             "形式:\n質問: ...\n回答: ...\n\n# 文書\n{document}"),
    Template("summary-v1",
             "あなたは「{persona}」です。以下の文書を、この人物が同じ立場の人に伝えるつもりで、"
             "日本語で三文以内に要約してください。要約だけを書いてください。\n\n# 文書\n{document}"),
    Template("rewrite-v1",
             "あなたは「{persona}」です。以下の文書の事実を変えずに、この人物の語り口と関心に合わせて"
             "日本語で書き直してください。書き直した文章だけを書いてください。\n\n# 文書\n{document}"),
    Template("dialogue-v1",
             "あなたは「{persona}」です。以下の文書の話題について、この人物(ユーザー)とアシスタントの"
             "日本語の対話を三往復書いてください。各発話は「ユーザー: 」または「アシスタント: 」で始めてください。"
             "\n\n# 文書\n{document}"),
)}

JUDGE = Template(
    "judge-v1",
    "次の指示に対する二つの回答を、正確さ・有用性・日本語の自然さで比較してください。"
    "短い理由のあとに、回答Aが良ければ [[A]]、回答Bが良ければ [[B]] と最後に一度だけ書いてください。\n\n"
    "# 指示\n{instruction}\n\n# 回答A\n{answer_a}\n\n# 回答B\n{answer_b}",
    system="あなたは公平で厳密な審査員です。回答の順序や長さに左右されずに判定してください。")


def judge_messages(instruction: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """The judge prompt comparing two answers to `instruction`."""
    return JUDGE.messages(instruction=instruction, answer_a=answer_a, answer_b=answer_b)
