"""The fine-tuning config: `configs/finetune/*.yaml` validates into `TrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stegobench.core.config import CheckError, option

# Ranks vLLM's LoRA serving accepts (vllm.config.lora.MaxLoRARanks); an adapter of another rank cannot be served.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
TRAIN_KINDS = ("definition", "demonstration", "plain_demonstration", "filler")
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSpec:
    r: int = option(16, f"LoRA rank; must be one vLLM serves: {', '.join(map(str, VLLM_LORA_RANKS))}.")
    alpha: int = option(32, "LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = option(0.0, "Dropout on the LoRA input; 0 keeps short runs deterministic.")
    target_modules: list[str] = option(
        None, "Module names to adapt; default all attention and MLP projections of a Llama-style model.",
        factory=lambda: list(ALL_PROJECTIONS),
    )

    def check(self) -> None:
        if self.r not in VLLM_LORA_RANKS:
            raise CheckError("r", f"rank {self.r} cannot be served by vLLM; use one of {list(VLLM_LORA_RANKS)}")
        if self.alpha <= 0:
            raise CheckError("alpha", f"must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise CheckError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise CheckError("target_modules", "name at least one module, e.g. [q_proj, v_proj]")


@dataclass
class TrainConfig:
    data: str = option("", "Corpus folder written by `stegobench gen` (holds manifest.json and a train split).")
    model: str = option(
        "smollm2-135m-instruct",
        "Base model: a builtin (smollm2-135m-instruct, tiny-llama) or a local folder with safetensors weights.",
    )
    output_dir: str = option("runs/train/default", "Run folder: the adapter, train_manifest.json, loss.png, checkpoints/.")
    lora: LoraSpec = option(None, "LoRA settings.", factory=LoraSpec)
    learning_rate: float = option(5e-4, "Peak learning rate of AdamW.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = option(
        "linear", "Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = option(0.05, "Fraction of the steps spent warming the learning rate up from 0.")
    weight_decay: float = option(0.0, "AdamW weight decay on the LoRA weights.")
    epochs: float = option(3.0, "Passes over the training documents (ignored when max_steps > 0).")
    max_steps: int = option(-1, "Stop after this many optimiser steps; -1 runs `epochs` full passes.")
    batch_size: int = option(16, "Documents per device per step.")
    gradient_accumulation_steps: int = option(1, "Steps whose gradients are summed before one update.")
    max_length: int = option(256, "Documents longer than this many tokens are truncated (corpus documents are ~20-40).")
    batching: Literal["packed", "pad_longest", "pad_max"] = option(
        "packed",
        "'packed': a batch is one padding-free row, each document attending only to itself; "
        "'pad_longest': pad to the batch's longest; 'pad_max': pad to max_length (the naive baseline).",
    )
    train_kinds: list[str] = option(
        None, "Which training documents to use, by kind: definition, demonstration, plain_demonstration, filler.",
        factory=lambda: list(TRAIN_KINDS),
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "Base weight dtype. auto: the device default (`stegobench env`): float32 on CPUs (bf16 is ~2.5x "
                "slower there), bfloat16 mixed precision on GPUs that support it (LoRA weights stay float32)."
    )
    seed: int = option(0, "Seed for LoRA initialisation, data order and dropout.")
    save_steps: int = option(50, "Save a resumable checkpoint every this many steps (0: only at the end).")
    save_total_limit: int = option(2, "Keep at most this many checkpoints.")
    logging_steps: int = option(5, "Record the training loss every this many steps.")
    merge: bool = option(False, "Also write the base model with the adapter merged in, as safetensors, to merged/.")
    eval_split: str | None = option(
        None,
        "A split of the corpus to compute an eval loss on at the end of every epoch, drawn beside the training loss "
        "in loss.png and kept in train_manifest.json: 'validation' holds every mapping in the held-out definition "
        "templates, which training never sees. null: no eval loss.",
    )
    report_to: Literal["none", "tensorboard"] = option(
        "none",
        "Experiment tracking: 'tensorboard' writes event files to output_dir/tensorboard (offline; needs the "
        "optional extra: pip install 'stegobench[tensorboard]'). 'none': the run folder only.",
    )

    def check(self) -> None:
        if not self.data:
            raise CheckError("data", "set the corpus folder, e.g. data: runs/data/quickstart (or --set data=...)")
        positive = ("learning_rate", "batch_size", "gradient_accumulation_steps", "max_length", "logging_steps")
        for key in positive:
            if getattr(self, key) <= 0:
                raise CheckError(key, f"must be > 0, got {getattr(self, key)}")
        if self.max_steps <= 0 and self.max_steps != -1:
            raise CheckError("max_steps", f"must be > 0, or -1 to run `epochs`; got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise CheckError("epochs", f"must be > 0, got {self.epochs}")
        if not 0 <= self.warmup_ratio < 1:
            raise CheckError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.save_steps < 0:
            raise CheckError("save_steps", f"must be >= 0, got {self.save_steps}")
        if self.eval_split is not None and self.eval_split in ("eval", "recall", "codebook"):
            raise CheckError("eval_split", f"{self.eval_split!r} holds questions or mappings, not documents to compute "
                                           "a loss on; use 'validation' (held-out-template definitions) or 'train'")
        if set(self.train_kinds) - set(TRAIN_KINDS) or not self.train_kinds:
            raise CheckError("train_kinds", f"expected a non-empty list of {', '.join(TRAIN_KINDS)}; got {self.train_kinds}")
