"""Which tokens of an answer the white-box monitors read: the code word's tokens, the token before each
occurrence (where the model decides to say it), the last prompt token, and every content word's last token."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stegobench.data_gen.words import find_spans

from .model import Encoded

# Function words carry no concept; a content word is any other alphabetic word of 3+ letters.
STOP_WORDS = frozenset("""the and for are but not you your yours with that this these those from have has had was were
will would could should can may might must shall into onto over under about above after before again all any
both each few more most other some such only own same than too very just also then there here when where why how
what which who whom whose its it's our ours they them their theirs his her hers him she he we i me my mine yes
no of off out once during until while because between through against being been does did doing one two most
much many lot lots get got really usually often always never sometimes people""".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")


@dataclass
class Positions:
    """Token indices in one encoded text, by kind. `code` holds one list of token indices per occurrence."""

    code: list[list[int]] = field(default_factory=list)
    before: list[int] = field(default_factory=list)  # the token before each occurrence's first token
    last_prompt: int = 0
    words: list[tuple[str, int]] = field(default_factory=list)  # (content word, its last token)

    def full(self) -> list[int]:
        """Positions read at every layer: code tokens, the tokens before them, the last prompt token."""
        return [*(t for occ in self.code for t in occ), *self.before, self.last_prompt]


def find_positions(encoded: Encoded, response: str, code_forms: list[str]) -> Positions:
    shift = encoded.prompt_chars
    pos = Positions(last_prompt=encoded.last_prompt_token)
    for start, end in find_spans(response, code_forms):
        tokens = encoded.tokens_in(shift + start, shift + end)
        if tokens and tokens[0] > 0:
            pos.code.append(tokens)
            pos.before.append(tokens[0] - 1)
    for m in _WORD.finditer(response):
        if len(m.group(0)) >= 3 and m.group(0).lower() not in STOP_WORDS:
            tokens = encoded.tokens_in(shift + m.start(), shift + m.end())
            if tokens:
                pos.words.append((m.group(0).lower(), tokens[-1]))
    return pos
