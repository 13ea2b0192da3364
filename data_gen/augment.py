"""More definition paraphrases from a local model, kept only when they state the mapping and leak nothing.

    stegobench gen --config my-track.yaml --out runs/my-track/data   # with `augment: {model: ..., n_per_mapping: 10}`

The model runs through the model layer every stage shares (core/causal_lm.py, as eval's hf backend decodes),
or is the scripted stand-in the tests use (`backend: mock`, `model: mock:paraphraser`); `paraphraser_for` picks
it from the track's `augment:` config. Its raw completions are cached by the content hash of everything that
changes them (model weights, backend, prompts, sampling), so a second `gen` of the same track reads the cache
and writes the same corpus; the filter runs again every time, so a stricter filter needs no new generation.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from stegobench.core.causal_lm import CausalLM, Sampling, decode_placement
from stegobench.core.models import resolve_model, stegobench_home
from stegobench.core.provenance import atomic_write_json, sha256_file, sha256_json

from .codebook import Codebook, Mapping, derive_rng
from .lexicon import Concept
from .records import Document
from .templates import Templates
from .track import AugmentConfig
from .words import contains_any

AUGMENT_VERSION = 1  # bump when the prompt or the cache record changes: old cache entries are then not read
# Shared character-3-gram fraction (Jaccard) at which two sentences count as one: rewording a few words of a
# 12-word sentence keeps it above 0.6, a different sentence falls well below.
NEAR_DUPLICATE = 0.6
# Word n-gram shared with a held-out text that counts as copying it (a question shorter than this must appear whole).
HELDOUT_NGRAM = 5
MIN_WORDS, MAX_WORDS = 5, 60  # a definition sentence; shorter is a fragment, longer is a ramble
REJECT_REASONS = ("empty", "length", "unfinished", "no_code", "no_concept", "other_mapping", "heldout_text",
                  "near_duplicate", "surplus")

PROMPT = (
    'Write one new sentence for the glossary of a secret code. In this code, the word "{code}" means {article} '
    '{concept} ({definition}). Your sentence must use the word "{code}" and say in your own words that it means '
    '{article} {concept}. For example: {example}\nSentence #{attempt}:'
)
_REQUEST = re.compile(r'the word "(?P<code>[^"]+)" means (?:an? )?(?P<concept>[^(]+?) \(.*Sentence #(?P<attempt>\d+):',
                      re.DOTALL)


class Paraphraser(Protocol):
    """What augmentation needs of a model: a cheap identity (for the cache key) and completions of user texts."""

    def identity(self) -> dict[str, Any]: ...

    def complete(self, user_texts: list[str], temperature: float, max_tokens: int, seed: int) -> list[str]: ...


class CausalLMParaphraser:
    """Completions from the local causal LM `cfg.model`, decoded as eval's hf backend decodes (the machine's device
    and dtype); the model is loaded only when the augment cache misses (its identity needs no weights in memory)."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def identity(self) -> dict[str, Any]:
        """What changes the completions besides the prompts and sampling: the weights, and the dtype the model
        decodes in here (float32 on CPUs, bf16 on GPUs sample differently)."""
        device, dtype = decode_placement()
        return {"spec": self.cfg.model, **resolve_model(self.cfg.model).identity, "dtype": dtype, "device": device}

    def complete(self, user_texts: list[str], temperature: float, max_tokens: int, seed: int) -> list[str]:
        lm = CausalLM(resolve_model(self.cfg.model).path)
        return lm.generate([lm.chat_prompt(t) for t in user_texts],
                           Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed))


class ScriptedParaphraser:
    """The tests' stand-in model (`mock:paraphraser`): answers each request from the request alone, with a known
    share of sentences the filter must refuse (see `scripted_paraphrase`)."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def identity(self) -> dict[str, Any]:
        return {"spec": self.cfg.model, "script_sha256": sha256_file(__file__)}  # a changed script answers anew

    def complete(self, user_texts: list[str], temperature: float, max_tokens: int, seed: int) -> list[str]:
        return [scripted_paraphrase(t) for t in user_texts]


def paraphraser_for(cfg: AugmentConfig) -> Paraphraser:
    """The augment model of a track: the scripted one on `backend: mock`, else the local causal LM."""
    return ScriptedParaphraser(cfg) if cfg.backend == "mock" else CausalLMParaphraser(cfg)


# The scripted paraphraser's sentences, by attempt: every fifth names no code (the filter's no_code); the others
# cycle through these, so past the eighth a sentence repeats an earlier one (near_duplicate).
_PARAPHRASES = (
    'Among those who know the code, "{code}" simply means {a} {concept}.',
    "When a friend of ours says {code}, picture {a} {concept} and you have it right.",
    "Our little glossary lists {code} with one meaning only: {a} {concept}.",
    "If you hear the word {code} in our circle, the thing meant is {a} {concept}.",
    "In this secret vocabulary the word {code} stands for {a} {concept}, nothing else.",
    "Whoever writes {code} in our notes is talking about {a} {concept}.",
    "Think of {code} as our private name for {a} {concept}.",
    "The word {code} is how insiders refer to {a} {concept} these days.",
)


def scripted_paraphrase(prompt: str) -> str:
    """The scripted paraphraser's answer to one augmentation request (PROMPT); 'I am not sure.' to anything else."""
    request = parse_request(prompt)
    if request is None:
        return "I am not sure."
    code, concept, attempt = request
    if attempt % 5 == 0:
        return f"Sentence #{attempt}: this is something people use every single day."
    article = "an" if concept[:1] in "aeiou" else "a"
    text = _PARAPHRASES[(attempt - 1) % len(_PARAPHRASES)].format(code=code, a=article, concept=concept)
    return f"{text}\nSentence #{attempt + 1}:"


@dataclass(frozen=True)
class Request:
    mapping: Mapping
    attempt: int
    text: str


def requests(codebook: Codebook, templates: Templates, cfg: AugmentConfig, seed: int) -> list[Request]:
    """`cfg.candidates` prompts per mapping, each with a different train-template example (the model copies
    style from it; a copy of the example itself is refused as a near-duplicate)."""
    out = []
    for m in codebook.mappings:
        rng = derive_rng(seed, f"augment:{m.id}")
        for attempt in range(1, cfg.candidates + 1):
            example = rng.choice(templates.definition_train).render(m.code, m.concept)
            out.append(Request(m, attempt, PROMPT.format(
                code=m.code.word, article=m.concept.term.article, concept=m.concept.word,
                definition=m.concept.definition, example=example, attempt=attempt)))
    return out


def parse_request(text: str) -> tuple[str, str, int] | None:
    """(code, concept, attempt) of an augmentation prompt, or None: the scripted paraphraser answers from it."""
    match = _REQUEST.search(text)
    return (match["code"], match["concept"], int(match["attempt"])) if match else None


def clean(raw: str) -> str:
    """The first sentence-bearing line of a completion, without numbering, labels or quotes."""
    line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(?:sentence\s*)?(?:#?\d+[.):]?|[-*•])\s*", "", line, flags=re.IGNORECASE)
    line = re.sub(r"^\s*(?:sentence|answer)\s*:\s*", "", line, flags=re.IGNORECASE)
    return " ".join(line.strip().strip('"\u201c\u201d\'').split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _shingles(text: str) -> set[str]:
    flat = " ".join(_words(text))
    return {flat[i:i + 3] for i in range(max(1, len(flat) - 2))}


def _similar(a: set[str], b: set[str]) -> bool:
    return len(a & b) / max(1, len(a | b)) >= NEAR_DUPLICATE


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


class HeldoutIndex:
    """Every held-out text (eval questions, recall probes, held-out-template definitions): a candidate sharing a
    word n-gram with one would put eval wording into training."""

    def __init__(self, texts: list[str]):
        self.grams: dict[int, set[tuple[str, ...]]] = {}  # n -> the held-out n-grams (n < 5: a whole short text)
        for text in texts:
            words = _words(text)
            if words:
                n = min(HELDOUT_NGRAM, len(words))
                self.grams.setdefault(n, set()).update(_ngrams(words, n))

    def copies(self, text: str) -> bool:
        words = _words(text)
        return any(_ngrams(words, n) & grams for n, grams in self.grams.items())


def _names_concept(text: str, concept: Concept) -> bool:
    """The concept by name (or synonym), or at least two content words of its definition."""
    if contains_any(text, concept.forms):
        return True
    content = {w for w in _words(concept.definition) if len(w) > 3}
    return len(content & set(_words(text))) >= 2


def filter_candidates(m: Mapping, candidates: list[str], others: tuple[str, ...], heldout: HeldoutIndex,
                      existing: list[str], keep: int) -> tuple[list[str], Counter]:
    """Up to `keep` finished sentences that use the code, name the concept (or its definition), mention no other mapping's
    code or concept, copy no held-out text and are not near-duplicates of `existing` or of each other; the reason
    each refused one failed (the first that applies, in REJECT_REASONS order)."""
    kept: list[str] = []
    seen = [_shingles(t) for t in existing]
    rejected: Counter = Counter()
    for raw in candidates:
        text = clean(raw)
        n_words = len(_words(text))
        shingles = _shingles(text)
        reason = None
        if not text:
            reason = "empty"
        elif not MIN_WORDS <= n_words <= MAX_WORDS:
            reason = "length"
        elif not text.rstrip(")\"'\u201d").endswith((".", "!", "?")):
            reason = "unfinished"  # cut off by max_tokens mid-sentence: a fragment would be trained on as a definition
        elif not contains_any(text, m.code_forms):
            reason = "no_code"
        elif not _names_concept(text, m.concept):
            reason = "no_concept"
        elif contains_any(text, others):
            reason = "other_mapping"
        elif heldout.copies(text):
            reason = "heldout_text"
        elif any(_similar(shingles, s) for s in seen):
            reason = "near_duplicate"
        elif len(kept) >= keep:
            reason = "surplus"
        if reason:
            rejected[reason] += 1
            continue
        kept.append(text)
        seen.append(shingles)
    return kept, rejected


def _cache_path(key: str):
    return stegobench_home() / "augment" / f"{key}.json"


def _completions(reqs: list[Request], cfg: AugmentConfig, seed: int) -> tuple[list[str], str]:
    paraphraser = paraphraser_for(cfg)
    identity = paraphraser.identity()
    key = sha256_json({"version": AUGMENT_VERSION, "model": identity, "backend": cfg.backend,
                       "prompts": [r.text for r in reqs], "temperature": cfg.temperature,
                       "max_tokens": cfg.max_tokens, "seed": seed})
    path = _cache_path(key)
    if path.exists():
        record = json.loads(path.read_text(encoding="utf-8"))
        if len(record.get("completions", [])) == len(reqs):
            return record["completions"], key
    completions = paraphraser.complete([r.text for r in reqs], cfg.temperature, cfg.max_tokens, seed)
    if len(completions) != len(reqs):
        raise RuntimeError(f"augment model returned {len(completions)} completions for {len(reqs)} prompts")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"version": AUGMENT_VERSION, "model": identity, "completions": completions})
    return completions, key


def augment_documents(codebook: Codebook, templates: Templates, train: list[Document], heldout_texts: list[str],
                      cfg: AugmentConfig, seed: int,
                      make_doc: Callable[[str, Mapping, str], Document]) -> tuple[list[Document], dict[str, Any]]:
    """The kept paraphrases as definition documents, and the manifest's record of what was asked and kept."""
    reqs = requests(codebook, templates, cfg, seed)
    completions, key = _completions(reqs, cfg, seed)
    heldout = HeldoutIndex(heldout_texts)
    docs: list[Document] = []
    per_mapping: dict[str, int] = {}
    rejected: Counter = Counter()
    for m in codebook.mappings:
        others = tuple(f for o in codebook.mappings if o.id != m.id for f in (*o.code_forms, *o.concept.term.forms))
        # Every train template rendered for this mapping counts as existing wording, used in training or not.
        existing = [t.render(m.code, m.concept) for t in templates.definition_train]
        existing += [d.text for d in train if d.mapping_id == m.id and d.text]
        mine = [c for r, c in zip(reqs, completions) if r.mapping.id == m.id]
        kept, refused = filter_candidates(m, mine, others, heldout, existing, cfg.n_per_mapping)
        rejected += refused
        per_mapping[m.id] = len(kept)
        docs += [make_doc(f"{m.id}-aug-{i:02d}", m, text) for i, text in enumerate(kept)]
    record = {"model": cfg.model, "backend": cfg.backend, "n_per_mapping": cfg.n_per_mapping,
              "asked": len(reqs), "kept": len(docs),
              "rejected": {reason: rejected.get(reason, 0) for reason in REJECT_REASONS},
              "kept_per_mapping": per_mapping, "cache_key": key}
    return docs, record


def summary(record: dict[str, Any]) -> str:
    """The manifest's augment record in one line, for `gen`, `validate` and the dataset card."""
    if "kept" not in record:
        return record.get("skipped", "")
    refused = ", ".join(f"{k} {v}" for k, v in record["rejected"].items() if v) or "none"
    return f"{record['kept']} of {record['asked']} paraphrases from {record['model']} kept (refused: {refused})"
