"""Text a submitter typed: checked on the way in, escaped on the way out.

In: names and submitters are NFKC-normalised, and refused when they hold a character a terminal or a browser
acts on or hides (controls such as ESC, BEL, CR, LF; zero-width and bidirectional formatting characters), when
they mix letters of two scripts (Latin with Cyrillic or Greek: look-alike letters imitate another name), or when
they read the same as another submitter's entry (`fold`: NFKC, case folding, look-alike letters).

Out: rows stored before these checks existed may still hold such characters, so every output escapes them as
data (`visible`): the terminal table, markdown, CSV (whose cells are also kept from being read as formulas), the
HTML pages (autoescaped, then the same escapes) and JSON (ASCII-escaped).
"""

from __future__ import annotations

import unicodedata

# Unicode categories of characters that are acted on or invisible: controls, format characters (zero-width,
# bidirectional overrides, soft hyphen), private use, surrogates, unassigned, line and paragraph separators.
_HIDDEN = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}
# Unicode's Default_Ignorable_Code_Point ranges outside those categories: blank letters (Hangul fillers), variation
# selectors, the combining grapheme joiner; they render as nothing.
_IGNORABLE = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
              (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
# Scripts whose letters are counted (the first word of a letter's Unicode name); other letters are common.
_SCRIPTS = {"LATIN", "GREEK", "COPTIC", "CYRILLIC", "ARMENIAN", "HEBREW", "ARABIC", "SYRIAC", "THAANA", "DEVANAGARI",
            "BENGALI", "GURMUKHI", "GUJARATI", "ORIYA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "SINHALA", "THAI",
            "LAO", "TIBETAN", "MYANMAR", "GEORGIAN", "HANGUL", "ETHIOPIC", "CHEROKEE", "CJK", "HIRAGANA", "KATAKANA",
            "BOPOMOFO"}
# Script sets that are one writing system (UTS #39, "highly restrictive"): Japanese, Chinese and Korean with Latin.
_ONE_SYSTEM = ({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}, {"LATIN", "CJK", "BOPOMOFO"}, {"LATIN", "CJK", "HANGUL"})
# Letters that render like Latin ones (a part of Unicode's confusables.txt: Cyrillic, Greek, digits), and
# letter pairs that do. Applied after case folding.
_LOOKALIKE = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y", "һ": "h", "ɡ": "g",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ϲ": "c", "ϳ": "j", "0": "o", "1": "l", "|": "l", "ı": "i",
})
_LOOKALIKE_PAIRS = (("rn", "m"), ("vv", "w"))
# What a spreadsheet reads as the start of a formula (OWASP: CSV injection), tab and CR included.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def normalise(value: str) -> str:
    return unicodedata.normalize("NFKC", value)


def _shown(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _hidden(c: str, keep: str = "") -> bool:
    if c in keep:
        return False
    if unicodedata.category(c) in _HIDDEN or (c.isspace() and c != " "):
        return True
    code = ord(c)
    return code >= 0x034F and any(low <= code <= high for low, high in _IGNORABLE)


def scripts(value: str) -> set[str]:
    """The scripts of the letters in `value` (digits, punctuation and symbols belong to none)."""
    found = set()
    for c in value:
        if unicodedata.category(c).startswith("L"):
            word = unicodedata.name(c, "").split(" ", 1)[0]
            if word in _SCRIPTS:
                found.add(word)
    return found


def name_problem(value: str, keep: str = "") -> str | None:
    """Why `value` (already NFKC) cannot be a name shown to others, or None. `keep`: characters allowed anyway
    (newlines in free-text notes)."""
    hidden = sorted({_shown(c) for c in value if _hidden(c, keep)})
    if hidden:
        return (f"contains control or invisible characters ({', '.join(hidden[:5])}), which a terminal or browser "
                "acts on or hides; remove them")
    found = scripts(value)
    if len(found) > 1 and not any(found <= system for system in _ONE_SYSTEM):
        return (f"mixes letters of {' and '.join(sorted(found))} ({ascii(value)}): look-alike letters from two "
                "scripts can imitate another entry's name; write it in one script")
    return None


def fold(value: str) -> str:
    """The form two names are compared in: NFKC, case-folded, look-alike letters mapped to one, spaces collapsed.
    Two names with the same fold render alike."""
    folded = " ".join(normalise(value).casefold().split()).translate(_LOOKALIKE)
    for pair, single in _LOOKALIKE_PAIRS:
        folded = folded.replace(pair, single)
    return folded


def visible(value: object, keep: str = "") -> object:
    """`value` with every control or invisible character written as an escape (ESC -> \\x1b, U+202E ->
    \\u202e), so printing it cannot move a cursor, retitle a terminal, write a clipboard or reorder a line.
    Anything that is not a string is returned as it is."""
    if not isinstance(value, str) or not any(_hidden(c, keep) for c in value):
        return value
    return "".join(_shown(c) if _hidden(c, keep) else c for c in value)


def csv_cell(value: object) -> object:
    """A CSV cell: visible, and a text starting like a formula (=, +, -, @) prefixed with ' so a spreadsheet shows
    it as text. Numbers are left alone (a negative score is a number, not a formula)."""
    value = visible(value)
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#!"})


def md_cell(value: str) -> str:
    """A markdown table cell of submitted text: visible, with markdown's markup characters escaped (no link,
    image, HTML tag or column break can be made from a name)."""
    return visible(value).translate(_MARKDOWN)
