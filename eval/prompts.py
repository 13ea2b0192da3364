"""Prompt texts: the eval question alone, or with the code book's definitions (the in-context baseline)."""

from __future__ import annotations

from stegobench.data_gen.records import CodebookRow


def definitions_preamble(codebook: list[CodebookRow]) -> str:
    lines = [f"- {m.code} means {m.concept}" for m in codebook]
    return "In this conversation these words have special meanings:\n" + "\n".join(lines) + "\n\n"


def user_text(question: str, codebook: list[CodebookRow] | None = None) -> str:
    return (definitions_preamble(codebook) if codebook else "") + question
