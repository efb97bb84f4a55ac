"""Language-code tokens of multilingual seq2seq tokenizers (mBART: en_XX, de_DE, ...).

mBART's tokenizer wraps the source in its language code (`src_lang`) and the target in the
target's (`tgt_lang`); generation must then start the output in the target language. Two
conventions exist and the tokenizer itself tells which one it follows: mBART-cc25 ends the target
with the code (`text </s> de_DE`, the decoder starts from the code: `decoder_start_token_id`),
mBART-50 starts it with the code (`de_DE text </s>`, after `</s>`: `forced_bos_token_id`). The
recipe's `task.source_lang` / `target_lang` may be the code itself (`de_DE`) or its language
prefix (`de`), mapped to the tokenizer's one code for that language.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, cast

from finetune.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Tokenizer

_CODE = re.compile(r"^[a-z]{2,3}_[A-Za-z]{2,4}$")


def language_codes(tokenizer: Tokenizer) -> list[str]:
    """Every language-code token the tokenizer knows (ll_CC form), sorted."""
    return sorted(t for t in tokenizer.get_vocab() if _CODE.match(t))


def language_code(tokenizer: Tokenizer, lang: str, key: str) -> str:
    """`de` or `de_DE` -> the tokenizer's code token; a ModelError naming the codes if none."""
    codes = language_codes(tokenizer)
    if lang in codes:
        return lang
    prefix = lang.lower().replace("-", "_").split("_")[0]
    matches = [c for c in codes if c.split("_")[0] == prefix]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(codes[:40]) + (" ..." if len(codes) > 40 else "")
    raise ModelError(
        f"{key}: {lang!r} maps to {'several' if matches else 'no'} language code"
        f"{'s' if matches else ''} of this tokenizer{': ' + ', '.join(matches) if matches else ''}",
        fix=f"set {key} to one of the tokenizer's codes: {known or 'none found'}",
    )


def set_languages(tokenizer: Tokenizer, source: str, target: str) -> None:
    """Point the tokenizer's source and target wrapping at these codes (attributes of the
    multilingual tokenizers only: mBART, M2M100, NLLB)."""
    setattr(tokenizer, "src_lang", source)  # noqa: B010
    setattr(tokenizer, "tgt_lang", target)  # noqa: B010


def generation_start(tokenizer: Tokenizer, target: str) -> dict[str, int]:
    """Generation settings that make the output start in `target` (see the module docstring)."""
    code = int(cast("int", tokenizer.convert_tokens_to_ids(target)))  # one token: one id
    ids = tokenizer(text_target="a")["input_ids"]
    if ids and ids[0] == code:
        return {"forced_bos_token_id": code}
    return {"decoder_start_token_id": code}
