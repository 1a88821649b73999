"""Hugging Face export of the SentencePiece model: tokenizer.json, tokenizer_config.json with a chat
template, special_tokens_map.json; loads offline with AutoTokenizer.from_pretrained(dir)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from factory.errors import VerificationError
from factory.hf.tokenizer_files import make_portable, set_eos
from factory.io import atomic_write_json
from tokenizer.config import SpecialTokens

if TYPE_CHECKING:  # for annotations only
    from transformers import PreTrainedTokenizerBase

HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def chat_template(t: SpecialTokens) -> str:
    """ChatML-style turns with the configured tokens; assistant replies sit in {% generation %} so TRL can
    train on them alone (return_assistant_tokens_mask)."""
    start, end, nl = json.dumps(t.chat_start), json.dumps(t.chat_end), json.dumps("\n")
    return (
        "{%- for message in messages %}"
        f"{{{{ {start} + message['role'] + {nl} }}}}"
        "{%- if message['role'] == 'assistant' %}"
        f"{{% generation %}}{{{{ message['content'] + {end} }}}}{{% endgeneration %}}"
        f"{{%- else %}}{{{{ message['content'] + {end} }}}}"
        "{%- endif %}"
        f"{{{{ {nl} }}}}"
        "{%- endfor %}"
        f"{{%- if add_generation_prompt %}}{{{{ {start} + 'assistant' + {nl} }}}}{{%- endif %}}"
    )


def special_tokens_map(t: SpecialTokens) -> dict[str, object]:
    return {"bos_token": t.bos, "eos_token": t.eod, "unk_token": t.unk, "pad_token": t.pad,
            "additional_special_tokens": t.special()}


def export(out_dir: Path, t: SpecialTokens) -> None:
    """Convert `out_dir/tokenizer.model` with transformers' TokenizersBackend (its SentencePiece path keeps
    ids; LlamaTokenizer would not) and save the HF files beside it."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    staging = {"tokenizer_class": "TokenizersBackend", "bos_token": t.bos, "eos_token": t.eos, "unk_token": t.unk,
               "pad_token": t.pad, "extra_special_tokens": t.special(), "chat_template": chat_template(t)}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(staging, ensure_ascii=False), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(out_dir)  # a local folder: no hub access
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in t.user_defined])
    tok.save_pretrained(out_dir, save_jinja_files=False)
    atomic_write_json(out_dir / "special_tokens_map.json", special_tokens_map(t))
    set_eos(out_dir, t.eod)  # a base model's EOS: where pretraining ended documents
    make_portable(out_dir)
    check_single_ids(load(out_dir), out_dir / "tokenizer.model", t)


def load(out_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(out_dir, local_files_only=True)


def check_single_ids(tok: PreTrainedTokenizerBase, model_file: Path, t: SpecialTokens) -> None:
    """Every special and user-defined token must encode to its one SentencePiece id."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    for token in t.control() + t.special() + t.user_defined:
        ids = tok.encode(token, add_special_tokens=False)
        if ids != [sp.piece_to_id(token)]:
            raise VerificationError(f"HF export: {token!r} encodes to {ids}, expected [{sp.piece_to_id(token)}]; "
                                    f"nothing was written")
