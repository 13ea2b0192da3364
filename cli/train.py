"""`stegobench train`: a LoRA adapter, under `accelerate launch -m stegobench.finetune.train`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stegobench.core.errors import EXIT_INTERRUPTED
from stegobench.core.paths import config_path

from .common import add_set


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="fine-tune a LoRA adapter (runs `accelerate launch -m stegobench.finetune.train`)",
        description="Fine-tune a LoRA adapter on a generated corpus under accelerate; the config is "
                    "validated first. Every config key: stegobench validate --describe finetune.")
    p.add_argument("--config", required=True,
                   help="fine-tuning config YAML (e.g. configs/finetune/quickstart.yaml) or a shipped one's name")
    p.add_argument("--accelerate-config", default=None, metavar="PROFILE",
                   help="accelerate profile: a name in configs/accelerate (cpu, cpu_ddp, single_gpu, multi_gpu, fsdp, "
                        "deepspeed_zero2) or a YAML path; default from the devices: cpu, single_gpu, or multi_gpu "
                        "with one process per GPU (`stegobench env` shows it)")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in output_dir")
    p.add_argument("--merge", action="store_true",
                   help="also write base + adapter merged, as safetensors, to output_dir/merged")
    add_set(p)
    p.set_defaults(func=run)


def accelerate_config(name: str | None) -> tuple[Path, list[str]]:
    """(profile file, extra launch flags): a name from configs/accelerate/ (cpu, cpu_ddp, single_gpu, ...) or a
    path to a YAML file; with no name, the device default (cpu, single_gpu, or multi_gpu with one process per
    visible GPU)."""
    extra: list[str] = []
    if name is None:
        from stegobench.core.device import device_defaults
        from stegobench.core.machine import read_machine

        defaults = device_defaults(read_machine())
        name = defaults.accelerate_profile
        if name == "multi_gpu":
            extra = ["--num_processes", str(defaults.accelerate_processes)]
        print(f"accelerate profile {name} ({defaults.device}, {defaults.gpu_count} GPU(s); "
              "--accelerate-config chooses another)", flush=True)
    return config_path("accelerate", name), extra


def run(args: argparse.Namespace) -> int:
    """Validate the config and the output folder here (clear errors, the last line printed, no subprocess
    traceback), then run it under `accelerate launch`."""
    from stegobench.core.config import load_config
    from stegobench.core.steps import call_through_ctrl_c
    from stegobench.finetune.config import TrainConfig
    from stegobench.finetune.train import check_output_dir, check_report_to

    config = config_path("finetune", args.config)
    cfg = load_config(TrainConfig, config, args.overrides)
    check_report_to(cfg)
    check_output_dir(cfg, args.resume, args.overwrite)  # e.g. --resume without a checkpoint: refused before launching
    profile, extra = accelerate_config(args.accelerate_config)
    # --quiet: a failed run exits 1 instead of raising CalledProcessError with a traceback under the run's own error
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", str(profile), *extra,
           "-m", "stegobench.finetune.train", "--config", str(config)]
    for item in args.overrides:
        cmd += ["--set", item]
    cmd += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--merge", args.merge))
            if on]
    print("+ " + " ".join(cmd), flush=True)
    # Only the training process acts on Ctrl-C (one line: where it stopped, what --resume continues from); the
    # launcher starts ignoring it (the training process takes it back) and this process waits.
    code, interrupted = call_through_ctrl_c(cmd, child_ignores_ctrl_c=True)
    return EXIT_INTERRUPTED if interrupted else code
