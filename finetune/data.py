"""Training rows from a generated corpus: token ids and labels, and the collators that batch them.

Definition and filler documents are plain text trained on every token. Demonstrations are chats rendered
with the model's chat template and trained on the assistant turn only (labels -100 elsewhere), so the model
learns to *answer* with the code word, not to ask the questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stegobench.core.config import ConfigError
from stegobench.core.errors import InputError
from stegobench.data_gen.generate import read_manifest
from stegobench.core.models import tokenizer_fingerprint

IGNORE = -100


def load_train_split(data: str | Path, tokenizer, kinds: list[str], eval_split: str | None = None):
    """The corpus's train split (and `eval_split`, else None), checked: it exists, is not empty, and was made for
    this tokenizer. Returns (train, eval, manifest)."""
    from datasets import DatasetDict, load_from_disk

    data = Path(data)
    if not data.exists():
        raise InputError(f"data: {data} does not exist; generate it with `stegobench gen --config ... --out {data}`")
    manifest = read_manifest(data)
    made_for = manifest.tokenizer
    if made_for and made_for.get("vocab_sha256") and made_for["vocab_sha256"] != tokenizer_fingerprint(tokenizer):
        raise InputError(
            f"data: {data} was generated for tokenizer {made_for.get('spec')!r} (its nonsense codes were checked "
            "against that vocabulary), not this model's; regenerate it with --set tokenizer=<this model>"
        )
    try:
        dd = load_from_disk(str(data))
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"data: {data}: not a saved dataset ({exc})") from None
    splits = list(dd) if isinstance(dd, DatasetDict) else []
    if "train" not in splits:
        raise InputError(f"data: {data} has no 'train' split (splits: {splits}); expected a `stegobench gen` corpus")
    train = _documents(dd["train"], kinds, f"data: {data}: the train split")
    if eval_split is None:
        return train, None, manifest
    if eval_split not in splits:
        raise ConfigError(f"eval_split: {data} has no {eval_split!r} split (splits: {', '.join(splits)}); corpora "
                          "written before the validation split need `stegobench gen` again, or set eval_split: null")
    if not {"text", "messages", "kind"} <= set(dd[eval_split].column_names):
        raise ConfigError(f"eval_split: the {eval_split!r} split of {data} holds no training documents (columns "
                          f"{dd[eval_split].column_names}); use 'validation'")
    return train, _documents(dd[eval_split], kinds, f"eval_split: the {eval_split!r} split of {data}"), manifest


def _documents(split, kinds: list[str], what: str):
    rows = split.filter(lambda r: r["kind"] in kinds)
    if len(rows) == 0:
        raise InputError(f"{what} has no documents of kinds {kinds}")
    return rows


def encode_row(row: dict[str, Any], tokenizer, max_length: int) -> dict[str, list[int]]:
    if row["messages"]:
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            raise InputError("the model's chat template does not render the prompt as a prefix of the chat; "
                              "assistant-only labels cannot be placed")
        # Tokenise the two parts apart so the label boundary is exact and matches how eval prompts are built.
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        input_ids = (prompt_ids + answer_ids)[:max_length]
        labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    else:
        input_ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"][:max_length]
        labels = list(input_ids)
    return {"input_ids": input_ids, "labels": labels}


def encode_dataset(train, tokenizer, max_length: int):
    return train.map(lambda r: encode_row(r, tokenizer, max_length), remove_columns=train.column_names,
                     desc="tokenising")


@dataclass
class TokenCountingCollator:
    """Batches rows by `mode` and counts the real (non-pad) tokens it hands to the model.

    packed: the batch becomes one row with position ids restarting per document; transformers then builds a
    block-diagonal causal mask, so documents never attend to each other and no compute is spent on padding.
    """

    tokenizer: Any
    mode: str
    max_length: int
    real_tokens: int = 0
    total_tokens: int = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if self.mode == "packed":
            ids, labels, positions = [], [], []
            for f in features:
                ids += f["input_ids"]
                # The first token of each document has no predecessor inside it: never a target.
                labels += [IGNORE] + f["labels"][1:]
                positions += list(range(len(f["input_ids"])))
            batch = {
                "input_ids": torch.tensor([ids]),
                "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions]),
                # transformers derives the per-document mask from position ids only without a KV cache;
                # with one (the default use_cache=True) the documents would attend to each other.
                "use_cache": False,
            }
            self.real_tokens += len(ids)
            self.total_tokens += len(ids)
            return batch
        width = self.max_length if self.mode == "pad_max" else max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = [f["input_ids"] + [pad] * (width - len(f["input_ids"])) for f in features]
        labels = [f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        self.real_tokens += sum(len(f["input_ids"]) for f in features)
        self.total_tokens += width * len(features)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
