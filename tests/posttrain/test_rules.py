"""Row rules of SFT/DPO data: roles the chat template renders, turn order, empty answers, the error budget,
and token lengths against max_length, measured with the project's own tokenizer and chat template."""

from __future__ import annotations

import json

import pytest

from factory.errors import DataError
from factory.posttrain.config import DatasetSpec
from factory.posttrain.data import RowPolicy, load_mixture
from factory.posttrain.rules import BASE_ROLES, RowError, check_conversation, template_roles

QWEN_LIKE = ("{%- for message in messages %}{%- if message.role == \"tool\" %}<tool_response>{{ message.content }}"
             "</tool_response>{%- else %}{{ message.role }}: {{ message.content }}{%- endif %}{%- endfor %}")


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def test_the_tool_role_is_allowed_only_where_the_template_names_it():
    assert template_roles(QWEN_LIKE) == (*BASE_ROLES, "tool")
    assert template_roles("{{ message['role'] }}") == BASE_ROLES
    calls = turns(("user", "天気は？"), ("assistant", "調べます"), ("tool", "晴れ"), ("assistant", "晴れです"))
    check_conversation(calls, template_roles(QWEN_LIKE))
    with pytest.raises(RowError, match="message 2: role 'tool' is not one of system, user, assistant"):
        check_conversation(calls, BASE_ROLES)
    with pytest.raises(RowError, match="message 1: tool after a user turn"):
        check_conversation(turns(("user", "q"), ("tool", "x"), ("assistant", "a")), template_roles(QWEN_LIKE))


@pytest.mark.parametrize(("messages", "rule"), [
    (turns(("system", "s"), ("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2")), None),
    (turns(("user", "q"), ("assistant", "a"), ("system", "s")), "order"),
    (turns(("system", "s"), ("assistant", "a")), "order"),
    (turns(("user", "q")), "no_assistant"),
    (turns(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "")), "empty_assistant"),
    (turns(("User", "q"), ("assistant", "a")), "role"),
], ids=["valid", "late-system", "no-user", "no-assistant", "one-empty-answer", "capitalised-role"])
def test_each_broken_rule_is_named(messages, rule):
    if rule is None:
        check_conversation(messages, BASE_ROLES)
        return
    with pytest.raises(RowError) as info:
        check_conversation(messages, BASE_ROLES)
    assert info.value.rule == rule


def _rows(path, rows) -> DatasetSpec:
    """A JSONL dataset of `rows` (a string is written as the line itself)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return DatasetSpec(path=path)


GOOD = {"messages": turns(("user", "日本の首都は？"), ("assistant", "東京です。"))}


def test_below_the_rate_bad_rows_are_dropped_and_counted_per_rule(tmp_path, caplog):
    bad_role = {"messages": turns(("usr", "q"), ("assistant", "a"))}
    empty = {"messages": turns(("user", "q"), ("assistant", ""))}
    spec = _rows(tmp_path / "sft.jsonl", [GOOD] * 8 + [bad_role, empty, "not json"])
    mixture = load_mixture([spec], RowPolicy("sft", max_error_rate=0.3), seed=0)
    assert len(mixture.dataset) == 8
    assert mixture.rejected == {"role": 1, "empty_assistant": 1, "json": 1}
    assert (f"sft: {spec.path}: dropped 3 of 11 rows that break a rule (empty_assistant 1, json 1, role 1); "
            f"first: {spec.path}:9: message 0: role 'usr'") in caplog.text
    with pytest.raises(DataError) as info:
        load_mixture([spec], RowPolicy("sft", max_error_rate=0.2), seed=0)
    assert str(info.value).startswith(f"{spec.path}: 3 of 11 rows break a rule (empty_assistant 1, json 1, role 1; "
                                      f"27.3% > sft.max_error_rate 20.0%); first: {spec.path}:9: ")


def test_every_row_over_max_length_names_the_dataset_and_the_shortest_row(tmp_path, tokenizer_dir, caplog):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    long = {"messages": turns(("user", "日本の首都はどこですか？" * 20), ("assistant", "東京です。" * 20))}
    spec = _rows(tmp_path / "long.jsonl", [long, GOOD])
    lengths = sorted(len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
                     for r in (long, GOOD))
    mixture = load_mixture([spec], RowPolicy("sft", tokenizer=tok, max_length=lengths[0]), seed=0)
    assert len(mixture.dataset) == 2
    assert f"1 of 2 rows are longer than max_length={lengths[0]} tokens and are cut to it (the longest has " \
           f"{lengths[1]})" in caplog.text
    with pytest.raises(DataError) as info:
        load_mixture([spec], RowPolicy("sft", tokenizer=tok, max_length=lengths[0] - 1), seed=0)
    assert str(info.value) == (f"{spec.path}: every row is longer than sft.max_length={lengths[0] - 1} tokens (the "
                               f"shortest has {lengths[0]}); raise max_length or shorten the rows")


def test_dpo_pair_lengths_count_the_longer_answer_and_eos(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    pair = {"prompt": "首都は？", "chosen": "東京です。" * 5, "rejected": "大阪です。"}
    spec = _rows(tmp_path / "pairs.jsonl", [pair])
    longest = len(tok(text=pair["prompt"] + pair["chosen"] + tok.eos_token)["input_ids"])
    load_mixture([spec], RowPolicy("dpo", tokenizer=tok, max_length=longest), seed=0)
    with pytest.raises(DataError, match=f"every row is longer than dpo.max_length={longest - 1} tokens "
                                        f"\\(the shortest has {longest}\\)"):
        load_mixture([spec], RowPolicy("dpo", tokenizer=tok, max_length=longest - 1), seed=0)


def test_a_template_that_refuses_a_row_counts_it(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    tok.chat_template = ("{%- for m in messages %}{%- if m['content'] | length > 20 %}{{ raise_exception("
                         "'turn too long for this template') }}{%- endif %}{{ m['content'] }}{%- endfor %}")
    wordy = {"messages": turns(("user", "q"), ("assistant", "長い答え" * 10))}
    spec = _rows(tmp_path / "sft.jsonl", [GOOD, wordy])
    with pytest.raises(DataError, match=r"template 1; 50.0% > sft.max_error_rate 0.0%\); first: .*sft.jsonl:2: "
                                        r"the chat template refuses the row \(turn too long for this template\)"):
        load_mixture([spec], RowPolicy("sft", tokenizer=tok), seed=0)
