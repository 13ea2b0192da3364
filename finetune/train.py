"""Fine-tune a LoRA adapter on a stegobench corpus, on one CPU or many GPUs, from one YAML config.

    accelerate launch -m stegobench.finetune.train --config configs/finetune/quickstart.yaml --set data=runs/data/quickstart
    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml -m stegobench.finetune.train --config ...   # 2 CPU processes
    stegobench train --config configs/finetune/smollm2-lora.yaml --accelerate-config cpu   # the same, wrapped

The run folder holds the adapter (adapter_model.safetensors + adapter_config.json, loadable by
PeftModel.from_pretrained and vLLM's LoRARequest), train_config.json (written first, checked on --resume),
train_manifest.json (written last: config, dataset and model identity, versions, seed, timings, tokens/s, loss
history), loss.png (with eval_split: an eval-loss point per epoch beside the training loss), checkpoints/ (for
--resume), with report_to: tensorboard, tensorboard/ (event files) and, with merge: true, merged/ (base + adapter,
safetensors).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stegobench.core.device import device_defaults, resolve_dtype
from stegobench.core.machine import read_machine
from stegobench.core.config import ConfigError, load_config, to_dict
from stegobench.core.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, record_base_model
from stegobench.core.errors import ENV_POINTER, EXIT_INTERRUPTED, InputError, ResourceError, StegobenchError, UserError
from stegobench.core.models import resolve_model
from stegobench.core.profile import Work, record_imports, span
from stegobench.core.provenance import atomic_write_json, environment, replace_dir, save_atomically, sha256_file
from stegobench.data_gen.generate import MANIFEST as CORPUS_MANIFEST, read_manifest
from stegobench.finetune.config import TrainConfig
from stegobench.finetune.data import TokenCountingCollator, encode_dataset, load_train_split
from stegobench.finetune.manifest import (MANIFEST, TRAIN_MANIFEST_SCHEMA, EvalLossPoint, LossPoint, ParameterCounts,
                                          TrainedOn, TrainManifest, read_train_manifest)

log = logging.getLogger("stegobench.finetune.train")

RUN_CONFIG = "train_config.json"
# Keys that may change between a run and its --resume without changing what is trained.
RESUME_MUTABLE = {"merge", "save_steps", "save_total_limit", "logging_steps", "eval_split", "report_to"}


class RunDirError(InputError):
    """The output folder holds something this run may not use or replace."""


class TrainingStopped(KeyboardInterrupt):
    """Ctrl-C during training, with one line saying where the run stopped and what is kept for --resume."""


@dataclass
class TrainResult:
    output_dir: Path
    manifest: TrainManifest | None  # None in every process but the main one, which writes it
    model: Any  # the PeftModel after training (in-process callers and tests inspect it)


def _latest_checkpoint(folder: Path) -> Path | None:
    ckpts = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def prepare_output_dir(cfg: TrainConfig, resume: bool, overwrite: bool, is_main: bool) -> Path | None:
    """Check the run folder (`check_output_dir`), empty it for a fresh run with --overwrite, and return the
    checkpoint to resume from (None for a fresh run)."""
    ckpt = check_output_dir(cfg, resume, overwrite)
    out = Path(cfg.output_dir)
    if not resume and out.exists() and any(out.iterdir()) and is_main:
        shutil.rmtree(out)  # ours, and --overwrite was given (checked above)
    return ckpt


def check_output_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint --resume would continue from (None for a fresh run), or RunDirError: nothing is changed, so
    `stegobench train` checks this before launching and its error is the last line printed.

    A folder is ours when it holds train_config.json. Another tool's folder is never touched; a previous run
    is replaced only with --overwrite; --resume needs the same config and a checkpoint.
    """
    out = Path(cfg.output_dir)
    ours = (out / RUN_CONFIG).exists()
    if resume:
        if not ours:
            raise RunDirError(f"output_dir: {out} holds no run to resume (no {RUN_CONFIG}); drop --resume")
        import json

        before = json.loads((out / RUN_CONFIG).read_text())["config"]
        now = to_dict(cfg)
        changed = sorted(k for k in set(before) | set(now) if k not in RESUME_MUTABLE and before.get(k) != now.get(k))
        if changed:
            k = changed[0]
            raise RunDirError(
                f"--resume with a changed config: {k} was {before.get(k)!r}, now {now.get(k)!r} "
                f"(changed: {', '.join(changed)}); resume with the original config or start a new output_dir"
            )
        if (out / MANIFEST).exists():
            # The Trainer would run one more step past max_steps; a finished run has nothing left to do.
            raise RunDirError(f"output_dir: {out} holds a finished run (it has {MANIFEST}); nothing to resume. "
                              "Use --overwrite to train it again")
        ckpt = _latest_checkpoint(out / "checkpoints")
        if ckpt is None:
            every = before.get("save_steps")
            raise RunDirError(f"output_dir: {out} has no checkpoint to resume from: the run saves one every "
                              f"{every} steps (save_steps) and stopped before step {every}; start it again with "
                              "--overwrite (and a smaller save_steps)" if every else
                              f"output_dir: {out} has no checkpoint to resume from: save_steps was 0 (no "
                              "checkpoints); start it again with --overwrite")
        return ckpt
    if out.exists() and any(out.iterdir()):
        if not ours:
            raise RunDirError(
                f"output_dir: {out} holds files stegobench did not write (no {RUN_CONFIG}); choose another output_dir"
            )
        if not overwrite:
            raise RunDirError(f"output_dir: {out} holds another run; pass --overwrite to replace it or --resume to continue it")
    return None


def _write_loss_plot(history: list[dict], path: Path) -> None:
    """Training loss per logged step and, when the run had an eval split, its loss at the end of every epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history if "loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, marker="o", markersize=3, label="training loss")
    if evals:
        ax.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], marker="s", markersize=6,
                linestyle="--", color="tab:red", label="eval loss (end of epoch)")
        for h in evals:
            ax.annotate(f"{h['eval_loss']:.2f}", (h["step"], h["eval_loss"]), textcoords="offset points",
                        xytext=(0, 7), ha="center", fontsize=8, color="tab:red")
        ax.legend(fontsize=8)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(path.parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def check_report_to(cfg: TrainConfig) -> None:
    """Fail before any work when the tracker's package is missing: transformers would fail after loading the model."""
    if cfg.report_to == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ResourceError("report_to: 'tensorboard' needs the tensorboard package, which is not installed here: "
                                "pip install 'stegobench[tensorboard]' (or set report_to: none)")


def _trackers(cfg: TrainConfig, out: Path, state) -> list:
    """The report_to callbacks, on the main process only. transformers would put TensorBoard's files under
    checkpoints/runs/DATE_HOST (or $TENSORBOARD_LOGGING_DIR); they belong in the run folder, one place per run."""
    if cfg.report_to != "tensorboard" or not state.is_main_process:
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback(SummaryWriter(log_dir=str(out / "tensorboard")))
    callback.logging_dir = str(out / "tensorboard")  # where it reopens its writer after training (final eval)
    return [callback]


def _watch(trainer, cfg: TrainConfig):
    """A callback that says at the start when no checkpoint will be saved (so --resume could never continue the
    run), and keeps the loss of the final optimiser step (the logged losses are means over `logging_steps`, and
    the last logged one may be steps before the end)."""
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        final_loss: float | None = None
        final_step: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if cfg.save_steps and cfg.save_steps >= state.max_steps and state.is_world_process_zero:
                print(f"note: save_steps {cfg.save_steps} >= this run's {state.max_steps} steps: no checkpoint will be "
                      "saved, so a stopped run cannot be resumed (set save_steps below the step count)", flush=True)

        def on_step_end(self, args, state, control, **kwargs):
            loss, trainer.step_loss = trainer.step_loss, 0.0
            if state.global_step >= state.max_steps and hasattr(loss, "detach"):
                # every process's micro-batches summed, then the processes' mean: as the Trainer logs a loss
                self.final_loss = float(trainer.accelerator.reduce(loss.detach().clone(), "mean"))
                self.final_step = state.global_step
    return Watch()


def _stopped(cfg: TrainConfig, step: int, max_steps: int) -> str:
    """The one line printed when Ctrl-C stops training: where it stopped, and what --resume would continue from."""
    ckpt = _latest_checkpoint(Path(cfg.output_dir) / "checkpoints")
    kept = (f"{ckpt} (step {ckpt.name.split('-')[-1]}) is kept: `stegobench train --config ... --resume` continues "
            "from it" if ckpt else f"no checkpoint was saved yet (save_steps {cfg.save_steps}): a new run starts over "
            "with --overwrite")
    return f"training stopped by Ctrl-C at step {step} of {max_steps}; {kept}"


def _lora_config(cfg: TrainConfig, model):
    from peft import LoraConfig

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in cfg.lora.target_modules if t not in names]
    if missing:
        raise ConfigError(f"lora.target_modules: {missing[0]!r} is not a module of {cfg.model}; "
                          f"linear modules there include {sorted(n for n in names if n.endswith('proj'))}")
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), bias="none", task_type="CAUSAL_LM")


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, callbacks: list | None = None) -> TrainResult:
    """Train one adapter; callable in-process (tests) or under `accelerate launch` (one process per device)."""
    import torch
    from accelerate import PartialState
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments, set_seed

    from stegobench.core.causal_lm import load_causal_lm, load_tokenizer_at

    check_report_to(cfg)
    # cpu=True lets torchrun-launched processes (`accelerate launch --multi_gpu`) form a gloo group on CPUs.
    state = PartialState(cpu=not torch.cuda.is_available())
    ckpt = prepare_output_dir(cfg, resume, overwrite, state.is_main_process)
    state.wait_for_everyone()
    out = Path(cfg.output_dir)
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RUN_CONFIG, {"config": to_dict(cfg)})

    set_seed(cfg.seed)
    ref = resolve_model(cfg.model)
    tokenizer = load_tokenizer_at(ref.path)
    with span(Work.TRAIN_DATA):
        train_rows, eval_rows, data_manifest = load_train_split(cfg.data, tokenizer, cfg.train_kinds, cfg.eval_split)
        encoded = encode_dataset(train_rows, tokenizer, cfg.max_length)
        encoded_eval = encode_dataset(eval_rows, tokenizer, cfg.max_length) if eval_rows is not None else None
    defaults = device_defaults(read_machine())
    dtype_name = resolve_dtype(cfg.dtype, defaults.train_dtype)
    if state.is_main_process:
        print(f"training: dtype {dtype_name} (config dtype={cfg.dtype}), {state.num_processes} process(es); "
              + defaults.summary(), flush=True)
    model = load_causal_lm(ref.path, dtype_name, attn_implementation="sdpa")
    model = get_peft_model(model, _lora_config(cfg, model))
    collator = TokenCountingCollator(tokenizer, cfg.batching, cfg.max_length)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a fraction of the total steps
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=dtype_name == "bfloat16" and torch.cuda.is_available(),
        fp16=dtype_name == "float16" and torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        report_to=[],  # trackers are added as callbacks below, writing into the run folder
        eval_strategy="epoch" if encoded_eval is not None else "no",
        per_device_eval_batch_size=cfg.batch_size,
        prediction_loss_only=True,  # the loss is all we plot; gathering logits would hold the vocabulary per token
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    eval_seconds = [0.0]

    class _Trainer(Trainer):
        """Evaluation batches go through the same collator: keep them out of the real-token count and the time."""

        step_loss: Any = 0.0  # this optimiser step's loss so far: its micro-batches' losses, summed as logged

        def training_step(self, *a, **k):
            loss = super().training_step(*a, **k)
            self.step_loss = self.step_loss + loss
            return loss

        def evaluate(self, *a, **k):
            counted = (collator.real_tokens, collator.total_tokens)
            t = time.perf_counter()
            try:
                return super().evaluate(*a, **k)
            finally:
                collator.real_tokens, collator.total_tokens = counted
                eval_seconds[0] += time.perf_counter() - t

    trainer = _Trainer(model=model, args=args, train_dataset=encoded, eval_dataset=encoded_eval,
                       data_collator=collator, callbacks=[*(callbacks or []), *_trackers(cfg, out, state)])
    watch = _watch(trainer, cfg)
    trainer.add_callback(watch)
    start = time.perf_counter()
    try:
        with span(Work.TRAIN_STEPS, steps=cfg.max_steps, epochs=cfg.epochs):
            trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    except KeyboardInterrupt:
        from transformers.trainer_callback import ProgressCallback

        for callback in trainer.callback_handler.callbacks:  # its bar closed now, not redrawn after the line below
            if isinstance(callback, ProgressCallback) and callback.training_bar is not None:
                callback.training_bar.close()
                callback.training_bar = None
        raise TrainingStopped(_stopped(cfg, trainer.state.global_step, trainer.state.max_steps)) from None
    evaluated = [h["step"] for h in trainer.state.log_history if "eval_loss" in h]
    if encoded_eval is not None and (not evaluated or evaluated[-1] != trainer.state.global_step):
        trainer.evaluate()  # max_steps ended mid-epoch: the final adapter's eval loss too
    seconds = time.perf_counter() - start - eval_seconds[0]

    manifest = None
    if state.is_main_process:
        with span(Work.FILE_IO, what="save adapter, manifest, plots"):
            manifest = _finish(cfg, trainer, model, tokenizer, ref, data_manifest, collator, seconds, state.num_processes,
                           resumed_from=str(ckpt) if ckpt else None, eval_seconds=eval_seconds[0],
                               final=(watch.final_step, watch.final_loss))
    state.wait_for_everyone()
    return TrainResult(out, manifest, model)


def _finish(cfg, trainer, model, tokenizer, ref, data_manifest, collator, seconds, world, resumed_from,
            eval_seconds: float = 0.0, final: tuple[int | None, float | None] = (None, None)) -> TrainManifest:
    out = Path(cfg.output_dir)
    staging = out / ".adapter.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    # peft wrote the absolute path the base was loaded from; name it as the config did, with its weights' hashes.
    record_base_model(staging, cfg.model, ref.identity["weights_sha256"])
    # Weights, then config, each by one rename: the manifest written last (status: finished) is what marks the
    # pair complete, so a run killed between the two is retrained, never read.
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        os.replace(staging / name, out / name)
    shutil.rmtree(staging, ignore_errors=True)
    history = [h for h in trainer.state.log_history if "loss" in h]
    _write_loss_plot(trainer.state.log_history, out / "loss.png")
    if cfg.merge:
        merged_staging = out / ".merged.tmp"
        shutil.rmtree(merged_staging, ignore_errors=True)
        model.merge_and_unload().save_pretrained(str(merged_staging), safe_serialization=True)
        tokenizer.save_pretrained(str(merged_staging))
        replace_dir(merged_staging, out / "merged")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    manifest = TrainManifest(
        schema_version=TRAIN_MANIFEST_SCHEMA,
        status="finished",
        config=to_dict(cfg),
        seed=cfg.seed,
        base_model=ref.identity,
        dataset=TrainedOn(path=str(Path(cfg.data).resolve()), track=data_manifest.track,
                          content_sha256=data_manifest.content_sha256,
                          manifest_sha256=sha256_file(Path(cfg.data) / CORPUS_MANIFEST)),
        adapter_sha256=sha256_file(out / ADAPTER_WEIGHTS),
        parameters=ParameterCounts(trainable=trainable, total=total),
        world_size=world,
        resumed_from=resumed_from,
        global_steps=trainer.state.global_step,
        epochs=trainer.state.epoch,
        train_seconds=round(seconds, 2),
        # Counted by this process's collator; other processes see equally sized shards of the data.
        real_tokens=collator.real_tokens * world,
        padded_tokens=collator.total_tokens * world,
        real_tokens_per_second=round(collator.real_tokens * world / seconds, 1) if seconds > 0 else None,
        # the final optimiser step's own loss (the last logged one is a mean over up to logging_steps steps)
        final_loss=final[1] if final[1] is not None else (history[-1]["loss"] if history else None),
        final_loss_step=final[0] if final[1] is not None else (history[-1]["step"] if history else None),
        loss_history=[LossPoint(h["step"], h["loss"]) for h in history],
        eval_split=cfg.eval_split,
        eval_loss_history=[EvalLossPoint(h["step"], h.get("epoch"), h["eval_loss"])
                           for h in trainer.state.log_history if "eval_loss" in h],
        eval_seconds=round(eval_seconds, 2),
        environment=environment(),
    )
    atomic_write_json(out / MANIFEST, manifest.to_dict())
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stegobench.finetune.train", description="Train a LoRA adapter on a stegobench corpus.")
    p.add_argument("--config", required=True, help="fine-tuning config YAML, e.g. configs/finetune/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys for nested ones, e.g. lora.r=8); repeatable")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in output_dir")
    p.add_argument("--merge", action="store_true", help="also write the merged model to output_dir/merged")
    return p


def finished_run_matches(cfg: TrainConfig) -> bool:
    """True when cfg.output_dir holds a finished run of this exact config on the same data content: rerunning
    it would only reproduce it (quickstart and the validity study reuse such runs)."""
    import json

    out, data = Path(cfg.output_dir), Path(cfg.data)
    if not ((out / MANIFEST).exists() and (out / ADAPTER_WEIGHTS).exists()
            and (data / CORPUS_MANIFEST).exists()):
        return False
    done = read_train_manifest(out)
    return (done.config == json.loads(json.dumps(to_dict(cfg)))
            and done.dataset.content_sha256 == read_manifest(data).content_sha256)


def main(argv: list[str] | None = None) -> int:
    import signal

    # `stegobench train` starts accelerate's launcher ignoring Ctrl-C (so it prints no traceback of its own), and
    # an ignored signal stays ignored in the processes it starts: this one takes Ctrl-C back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    record_imports("stegobench.finetune.train")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main_process = os.environ.get("RANK", "0") == "0"  # one line from a multi-process run, not one per process
    try:
        overrides = list(args.overrides) + (["merge=true"] if args.merge else [])
        cfg = load_config(TrainConfig, args.config, overrides)
        result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except UserError as exc:
        print(f"stegobench.finetune.train: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except StegobenchError as exc:  # the machine's limits, not the input: the machine's facts explain them
        print(f"stegobench.finetune.train: error: {exc}\n{ENV_POINTER}", file=sys.stderr)
        return exc.exit_code
    except TrainingStopped as stopped:
        if main_process:
            print(f"\nstegobench train: {stopped}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if main_process:
            print("\nstegobench train: stopped by Ctrl-C before training began; nothing was trained", file=sys.stderr)
        return EXIT_INTERRUPTED
    m = result.manifest
    if m is not None:
        print(f"adapter written to {result.output_dir}  (steps {m.global_steps}, final loss {m.final_loss:.4f} "
              f"at step {m.final_loss_step}, {m.real_tokens_per_second} real tokens/s, {m.train_seconds} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
