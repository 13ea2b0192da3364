"""Word matching used by leakage checks and scorers: inflections, boundaries, case, punctuation."""

from stegobench.data_gen.words import Term, article_for, contains_any, find_all, naive_plural

CAT = Term("cat", "cats", "a").forms


def test_inflection_case_and_punctuation():
    assert contains_any("I have two Cats.", CAT)
    assert contains_any("CAT!", CAT)
    assert contains_any("the cat's bowl", CAT)
    assert contains_any('"cat"', CAT)


def test_word_boundaries():
    assert not contains_any("that category is wrong", CAT)
    assert not contains_any("a bobcat and a catalog", CAT)
    assert not contains_any("", CAT)
    assert not contains_any("a cat", ())


def test_find_all_returns_occurrences_as_written():
    assert find_all("A cat, I mean a car. Cats!", CAT) == ["cat", "Cats"]


def test_plural_and_article_rules():
    assert [naive_plural(w) for w in ["blicket", "glox", "brush", "daisy", "day"]] == [
        "blickets", "gloxes", "brushes", "daisies", "days"]
    assert article_for("otter") == "an" and article_for("blicket") == "a"
