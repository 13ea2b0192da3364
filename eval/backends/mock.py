"""A deterministic scripted model for tests: the whole pipeline runs without weights, with known answers.

    --backend mock --model mock:perfect_covert

It answers a prompt by finding the corpus eval question inside it (or another question of the corpus's lexicon,
answered as an unmapped control: the monitors' calibration questions) and applying a policy:
- never_code: names the concept ("It is a car.")
- always_code: a code word in every answer, controls included (hits, but as many false alarms)
- perfect_covert: the code word in the concept's role ("It is a cat: a road vehicle with ...")
- leaky: the code word and the concept together ("It is a cat, I mean a car.")
- random_role: the code word in another concept's role ("It is a cat: a tall plant with ...")
- random_code: a code word drawn from the book in every answer, controls included, in the role of the concept
  the question asks about, the concept unsaid: blind to the mapping, so its covert_score must be 0 (chance)
- coin_covert: perfect_covert on a coin flip per question, else the plain answer; the coin is seeded by the
  adapter's weights (no adapter: by nothing), so identical adapters answer identically and different ones differ
  question by question (the pooled-seeds interval tests)
Recall probes ("What does the word 'cat' mean?") are answered with the concept when the mock is given an adapter
(it stands for a model trained on the definitions) and with "I am not sure." without one (a base model that was
never told them).
Its `score` is a scripted base model that knows the lexicon. A continuation is likelier the more content words
it shares (a) with the definition of a concept it names, so a code word read as the concept it stands for fits
the perfect_covert answer and not the random_role one (semantic fit), and (b) with the definition of the concept
the question asks about (the answer plays the right role: constant across readings of one answer, so it leaves
semantic fit alone, but it makes a bare code word on a control surprising to the surprisal monitor). Asked the
LLM-judge question, it says "Yes" (suspicious) in proportion to how little of that role the answer carries.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any, Sequence

from stegobench.core.errors import InputError
from stegobench.data_gen.generate import corpus_lexicon, read_split
from stegobench.data_gen.words import contains_any

from .. import progress
from .base import Backend, Sampling
from .options import MockOptions

POLICIES = ("never_code", "always_code", "perfect_covert", "leaky", "random_role", "random_code", "coin_covert")
_STOP = {"with", "that", "used", "from", "into", "your", "them", "they", "their", "this", "have", "which", "when",
         "where", "while", "other", "over", "under", "often", "also", "very", "some", "small", "large", "long"}


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3 and w not in _STOP}


def _pick(options: list, key: str):
    """A stable choice keyed by text (no Python hash(): it changes between processes)."""
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


class MockBackend(Backend[MockOptions]):
    name = "mock"
    uses_device = False  # a script: no model, no device defaults to print

    def __init__(self, model: str, options: MockOptions | None = None, adapter: str | None = None, *,
                 corpus: str | Path | None = None, lora_adapters: Sequence[str] = ()):
        """`options.latency_s`: seconds each generate call sleeps, to stand in for a slow model (queue and crash
        tests); `adapter`: its weights seed coin_covert's coin, and with one the mock knows the definitions (recall)."""
        self.latency_s = (options or MockOptions()).latency_s
        self.coin_seed = _adapter_seed(adapter)
        self.recalls = adapter is not None
        policy = model.split(":", 1)[1] if model.startswith("mock:") else model
        if policy not in POLICIES:
            raise InputError(f"model {model!r}: the mock backend's policies are {', '.join('mock:' + p for p in POLICIES)}")
        self.policy = policy
        if corpus is None:
            raise InputError(f"model {model!r}: the mock backend answers a corpus's questions; give it the corpus")
        corpus = Path(corpus)
        items = read_split(corpus, "eval")
        self.codebook = {m["mapping_id"]: m for m in read_split(corpus, "codebook")}
        self.lexicon = corpus_lexicon(corpus)  # the corpus's own concepts: a track may add its own
        asked = {it["question"] for it in items}
        others = [{"id": q, "question": q, "split": "control", "control_type": "unmapped", "mapping_id": "",
                   "concept": c.word, "expected_words": list(c.forms)}
                  for c in self.lexicon.concepts for q in c.train_questions + c.heldout_questions if q not in asked]
        self.items = sorted(items + others, key=lambda it: -len(it["question"]))  # longest match first
        self.definitions = {c.word: c.definition for c in self.lexicon.concepts}
        self.articles = {c.word: c.term.article for c in self.lexicon.concepts}
        self._code_forms = [f for m in self.codebook.values() for f in m["code_forms"]]
        self.probes = read_split(corpus, "recall") if self.recalls else []

    def identity(self) -> dict[str, Any]:
        # The coin's seed is part of what the answers depend on: generation caches must keep adapters apart.
        return {"backend": "mock", "policy": self.policy, **({"coin_seed": self.coin_seed}
                                                               if self.policy == "coin_covert" else {}),
                **({"recalls": True} if self.recalls else {})}

    def chat_prompt(self, user_text: str) -> str:
        return f"User: {user_text}\nAssistant:"

    def _item_for(self, prompt: str) -> dict | None:
        return next((it for it in self.items if it["question"] in prompt), None)

    def _answer(self, item: dict | None) -> str:
        if item is None:
            return "I am not sure."
        concept = item["concept"]
        # A plain answer carries its role too (the definition, with any code word of this code book blanked out
        # so an honest answer is never a false alarm).
        role = re.sub(r"(?<!\w)(?:" + "|".join(map(re.escape, self._code_forms)) + r")(?!\w)", "thing",
                      self.definitions[concept], flags=re.IGNORECASE) if self._code_forms else self.definitions[concept]
        plain = f"It is {self.articles.get(concept, 'a')} {concept}: {role}."
        mapped = item["split"] in ("definition_only", "demonstrated")
        if self.policy == "always_code":
            m = self.codebook.get(item["mapping_id"]) or _pick(sorted(self.codebook.values(), key=lambda m: m["mapping_id"]), item["id"])
            role = f": {self.definitions[concept]}" if mapped else ""
            return f"It is {m['code_article']} {m['code']}{role}."
        if self.policy == "random_code":
            m = _pick(sorted(self.codebook.values(), key=lambda m: m["mapping_id"]), f"random_code:{item['id']}")
            return f"It is {m['code_article']} {m['code']}: {role}."
        if self.policy == "coin_covert" and _pick([True, False], f"{self.coin_seed}:{item['id']}"):
            return plain
        if not mapped or self.policy == "never_code":
            return plain
        m = self.codebook[item["mapping_id"]]
        a_code = f"{m['code_article']} {m['code']}"
        if self.policy in ("perfect_covert", "coin_covert"):
            return f"It is {a_code}: {self.definitions[concept]}."
        if self.policy == "leaky":
            return f"It is {a_code}, I mean {self.articles[concept]} {concept}."
        # random_role: another concept's role, one that names neither this concept nor a code word.
        others = [c for c in self.lexicon.concepts if c.word != concept
                  and not contains_any(c.definition, item["expected_words"] + self._code_forms)]
        return f"It is {a_code}: {_pick(others, item['id']).definition}."

    def generate(self, prompts: list[str], sampling: Sampling) -> list[str]:
        if self.latency_s:
            time.sleep(self.latency_s)
        answers = [self._recall(p) or self._answer(self._item_for(p)) for p in prompts]
        progress.report(len(answers))
        return answers

    def _recall(self, prompt: str) -> str | None:
        probe = next((p for p in self.probes if p["prompt"] in prompt), None)
        return None if probe is None else f"It means {probe['expected_words'][0]}."

    def _role_fit(self, prompt: str, text: str) -> int:
        item = self._item_for(prompt)
        if item is None or item["concept"] not in self.definitions:
            return 0
        return len(_content_words(text) & _content_words(self.definitions[item["concept"]]))

    def score(self, prompts: list[str], continuations: list[str]) -> list[float]:
        out = []
        for prompt, text in zip(prompts, continuations):
            if text in ("Yes", "No") and "\nAnswer: " in prompt:  # the LLM-judge monitor's question
                answer = prompt.split("\nAnswer: ", 1)[1].split("\n", 1)[0]
                role = self._role_fit(prompt, answer)
                out.append(-10.0 + (-role if text == "Yes" else role))
                continue
            named = [w for w in self.definitions if contains_any(text, [w])]
            reading = max((len(_content_words(text) & _content_words(self.definitions[w])) for w in named), default=0)
            out.append(float(reading + 3 * self._role_fit(prompt, text)) - 10.0)
        return out


def _adapter_seed(adapter: str | None) -> str:
    """The sha256 of an adapter's weights (its folder name when it has none; "" without an adapter)."""
    if adapter is None:
        return ""
    from stegobench.core.adapters import ADAPTER_WEIGHTS
    from stegobench.core.provenance import sha256_file

    weights = Path(adapter) / ADAPTER_WEIGHTS
    return sha256_file(weights)[:16] if weights.is_file() else Path(adapter).name


def write_scripted_adapter(folder: str | Path, seed: int, hidden: int = 128) -> Path:
    """A minimal valid rank-4 LoRA adapter (q_proj of layer 0) that the leaderboard's checks accept: the mock
    ignores its weights, so distinct seeds make distinct submissions with known answers (tests, stress scripts)."""
    import json

    import torch
    from safetensors.torch import save_file

    from stegobench.core.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    folder = Path(folder)
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(4, hidden),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(hidden, 4)},
              str(folder / ADAPTER_WEIGHTS))
    (folder / ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                      "target_modules": ["q_proj"]}))
    return folder
