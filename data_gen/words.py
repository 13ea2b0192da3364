"""Word forms and word-boundary matching, shared by the generator's leakage checks and eval's scorers."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable


def naive_plural(word: str) -> str:
    """English plural by spelling rules; used for nonsense codes and synonyms (the lexicon lists real plurals)."""
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def article_for(word: str) -> str:
    """'a' or 'an' by the first letter; good enough for nonsense codes (the lexicon lists real articles)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class Term:
    """A countable noun with the forms templates need: 'cat', 'cats', 'a'."""

    word: str
    plural: str
    article: str

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.word, self.plural]))

    def placeholders(self, prefix: str) -> dict[str, str]:
        """Template values: {code}, {Code}, {a_code}, {A_code}, {codes} for prefix 'code'."""
        a_word = f"{self.article} {self.word}"
        return {
            prefix: self.word,
            prefix.capitalize(): capitalize(self.word),
            f"a_{prefix}": a_word,
            f"A_{prefix}": capitalize(a_word),
            f"{prefix}s": self.plural,
        }


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


@functools.lru_cache(maxsize=4096)
def _pattern(forms: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first so 'cats' wins over 'cat'; lookarounds instead of \b so a form that starts or
    # ends with a non-word character still matches whole words only ('category' is not 'cat').
    alternatives = "|".join(re.escape(f) for f in sorted(set(forms), key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def contains_any(text: str, forms: Iterable[str]) -> bool:
    """Whether any form occurs in `text` as a whole word, case-insensitively ('Cats!' contains 'cats')."""
    forms = tuple(f for f in forms if f)
    return bool(forms) and _pattern(forms).search(text) is not None


def find_spans(text: str, forms: Iterable[str]) -> list[tuple[int, int]]:
    """(start, end) of every whole-word occurrence of any form, in order."""
    forms = tuple(f for f in forms if f)
    return [m.span() for m in _pattern(forms).finditer(text)] if forms else []


def find_all(text: str, forms: Iterable[str]) -> list[str]:
    """Every whole-word occurrence of any form, as written in `text`."""
    forms = tuple(f for f in forms if f)
    return [m.group(0) for m in _pattern(forms).finditer(text)] if forms else []
