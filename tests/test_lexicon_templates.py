"""The packaged lexicon and templates meet the issue's sizes; bad files give errors naming the entry."""

from __future__ import annotations

import pytest
import yaml

from stegobench.core.config import ConfigError
from stegobench.data_gen.lexicon import DEFAULT_LEXICON, load_lexicon
from stegobench.data_gen.templates import DEFAULT_TEMPLATES, load_templates
from stegobench.data_gen.words import contains_any


def test_packaged_lexicon_sizes_and_rules():
    lex = load_lexicon()
    assert len(lex.concepts) >= 120
    assert len(lex.categories) >= 10
    for c in lex.concepts:
        assert len(c.train_questions) + len(c.heldout_questions) >= 6, c.word
        assert len(c.heldout_questions) >= 2, c.word
        assert c.term.article in ("a", "an")
        assert not any(contains_any(q, c.forms) for q in c.train_questions + c.heldout_questions), c.word
    words = [c.word for c in lex.concepts]
    assert len(words) == len(set(words))


def test_packaged_templates_sizes():
    t = load_templates()
    assert len(t.definition_train) >= 30
    assert len(t.definition_heldout) >= 10
    assert len(t.demonstration) >= 20
    assert len(t.recall) >= 10
    # Held-out pools must be new phrasings: no template text shared with the train pool.
    assert not {x.text for x in t.definition_train} & {x.text for x in t.definition_heldout}


def _edited_copy(source, tmp_path, edit):
    """A copy of a packaged YAML file, with `edit` applied to its data, under the same file name."""
    data = yaml.safe_load(source.read_text())
    edit(data)
    p = tmp_path / source.name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def _lexicon_with(tmp_path, edit):
    return _edited_copy(DEFAULT_LEXICON, tmp_path, edit)


def test_empty_category_is_an_error(tmp_path):
    p = _lexicon_with(tmp_path, lambda d: d.__setitem__("weather", []))
    with pytest.raises(ConfigError, match=r"lexicon\.yaml: weather: empty category"):
        load_lexicon(p)


def test_question_naming_its_answer_is_an_error(tmp_path):
    def edit(d):
        d["vehicles"][0]["questions"]["heldout"][0] = "Which car do you drive?"
    with pytest.raises(ConfigError, match=r"vehicles\[0\] \(car\)\.questions: question 'Which car do you drive\?' names its own answer"):
        load_lexicon(_lexicon_with(tmp_path, edit))


def test_too_few_heldout_questions_is_an_error(tmp_path):
    def edit(d):
        d["tools"][1]["questions"]["heldout"] = d["tools"][1]["questions"]["heldout"][:1]
    with pytest.raises(ConfigError, match=r"tools\[1\] \(\w+\)\.questions\.heldout: need at least 2"):
        load_lexicon(_lexicon_with(tmp_path, edit))


def test_duplicate_word_across_categories_is_an_error(tmp_path):
    def edit(d):
        d["animals"][0]["synonyms"] = ["automobile"]
    with pytest.raises(ConfigError, match="form 'automobile' also belongs to"):
        load_lexicon(_lexicon_with(tmp_path, edit))


def _templates_with(tmp_path, edit):
    return _edited_copy(DEFAULT_TEMPLATES, tmp_path, edit)


def test_template_without_its_placeholder_is_an_error(tmp_path):
    def edit(d):
        d["definition"]["train"][4] = "In our usage, this word means {a_concept}."
    with pytest.raises(ConfigError, match=r"templates\.yaml: definition\.train\[4\]: .* has no code placeholder"):
        load_templates(_templates_with(tmp_path, edit))


def test_unknown_placeholder_is_an_error(tmp_path):
    def edit(d):
        d["recall"][0] = "What is {a_cod}?"
    with pytest.raises(ConfigError, match=r"recall\[0\]: unknown placeholder \{a_cod\}"):
        load_templates(_templates_with(tmp_path, edit))


def test_demonstration_may_not_name_the_concept(tmp_path):
    def edit(d):
        d["demonstration"][2] = "{A_code}, I mean {a_concept}."
    with pytest.raises(ConfigError, match=r"demonstration\[2\]: .* must not use a concept placeholder"):
        load_templates(_templates_with(tmp_path, edit))
