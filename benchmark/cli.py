"""The `stegobench` command: one subcommand per stage, each importing its stage lazily.

    stegobench gen --config configs/data/real-v1.yaml --out runs/data/real-v1
    stegobench train --config configs/finetune/quickstart.yaml --set data=runs/data/quickstart
    stegobench validate configs/data/real-v1.yaml
    stegobench validate --describe data
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

# Config kinds `validate` knows, as "module:Class" so that checking one never imports another stage.
CONFIG_KINDS = {
    "data": "data_gen.track:TrackConfig",
    "finetune": "finetune.config:TrainConfig",
    "eval": "eval.config:EvalConfig",
}
REPO_ROOT = Path(__file__).resolve().parent.parent
# Data files with their own loaders.
DATA_KINDS = {
    "lexicon": "data_gen.lexicon:load_lexicon",
    "templates": "data_gen.templates:load_templates",
}


def _load_symbol(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _guess_kind(path: Path) -> str | None:
    """configs/data/x.yaml -> 'data'; a file named lexicon*.yaml or templates*.yaml -> that kind."""
    for kind in DATA_KINDS:
        if path.name.startswith(kind):
            return kind
    parent = path.resolve().parent.name
    return parent if parent in CONFIG_KINDS else None


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys reach nested fields; the value is parsed as YAML); "
                        "repeatable, e.g. --set seed=3 --set n_definition_only=10")


def cmd_gen(args: argparse.Namespace) -> int:
    from data_gen.config import load_config
    from data_gen.generate import generate
    from data_gen.track import TrackConfig

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    config = load_config(TrackConfig, args.config, overrides)
    result = generate(config, args.out, overwrite=args.overwrite)
    m = result.manifest
    s = m["sizes"]
    print(f"wrote {result.out} in {result.seconds:.1f}s  (track {m['track']}, seed {m['seed']}, "
          f"content sha256 {m['content_sha256'][:16]})")
    print(f"  mappings       {s['mappings']}")
    print(f"  train docs     {s['train_documents']}  {s['train_by_kind']}"
          + (f"  ~{s['train_tokens']} tokens" if "train_tokens" in s else ""))
    print(f"  eval items     {s['eval_items']}  {s['eval_by_split']}  controls {s['eval_controls']}")
    print(f"  recall probes  {s['recall_probes']}")
    return 0


def _accelerate_config(name: str | None) -> Path:
    """A profile name from configs/accelerate/ (cpu, cpu_ddp, single_gpu, ...) or a path to a YAML file."""
    if name is None:
        import torch

        name = "single_gpu" if torch.cuda.is_available() else "cpu"
    for candidate in (Path(name), Path("configs/accelerate") / f"{name}.yaml", REPO_ROOT / "configs/accelerate" / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    profiles = sorted(p.stem for p in (REPO_ROOT / "configs/accelerate").glob("*.yaml"))
    raise SystemExit(f"stegobench train: no accelerate profile {name!r}; choose from {', '.join(profiles)} or give a file")


def cmd_train(args: argparse.Namespace) -> int:
    """Validate the config here (clear errors, no subprocess traceback), then run it under `accelerate launch`."""
    import subprocess

    from data_gen.config import load_config
    from finetune.config import TrainConfig

    load_config(TrainConfig, args.config, args.overrides)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(_accelerate_config(args.accelerate_config)),
           "-m", "finetune.train", "--config", args.config]
    for item in args.overrides:
        cmd += ["--set", item]
    cmd += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--merge", args.merge)) if on]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def cmd_eval(args: argparse.Namespace) -> int:
    from data_gen.config import load_config
    from eval.config import EvalConfig
    from eval.harness import rescore, run_eval

    if args.rescore:
        doc = rescore(args.rescore)
        out = Path(args.rescore)
    else:
        missing = [flag for flag, v in (("--data", args.data), ("--model", args.model), ("--out", args.out)) if not v]
        if missing:
            raise SystemExit(f"stegobench eval: {', '.join(missing)} required (or --rescore RUN)")
        overrides = list(args.overrides) + ([f"backend={args.backend}"] if args.backend else [])
        cfg = load_config(EvalConfig, args.config, overrides)
        doc = run_eval(cfg, args.data, args.model, args.adapter, args.out, overwrite=args.overwrite)
        out = Path(args.out)
    print(f"\n{'condition':24s} {'covert_score':>28s}  {'hits':>6s}  {'false alarms':>12s}")
    for name, cond in doc["conditions"].items():
        t = cond["table"]
        cs = t["covert_score"]
        hits = t["splits"].get("definition_only", {}).get("undetected_covert", {}).get("value")
        fa = t["splits"].get("control_unmapped", {}).get("false_use", {}).get("value")
        ci = f"{cs['value']:+.3f} [{cs['low']:+.3f}, {cs['high']:+.3f}]" if cs["value"] is not None else "-"
        print(f"{name:24s} {ci:>28s}  {hits if hits is None else round(hits, 3)!s:>6s}  {fa if fa is None else round(fa, 3)!s:>12s}")
    print(f"\nreport: {out / 'report.md'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from data_gen.config import describe, load_config

    if args.describe:
        kind = args.describe
        if kind not in CONFIG_KINDS:
            raise SystemExit(f"stegobench validate --describe: unknown kind {kind!r}; choose from {', '.join(CONFIG_KINDS)}")
        print(f"Options of the {kind!r} config ({CONFIG_KINDS[kind]}):")
        for line in describe(_load_symbol(CONFIG_KINDS[kind])):
            print("  " + line)
        return 0
    if not args.paths:
        raise SystemExit("stegobench validate: give one or more config files, or --describe KIND")
    for raw in args.paths:
        path = Path(raw)
        kind = args.kind or _guess_kind(path)
        if kind is None:
            raise SystemExit(
                f"{path}: cannot tell what kind of config this is; pass --kind "
                f"({', '.join([*CONFIG_KINDS, *DATA_KINDS])})"
            )
        if kind in DATA_KINDS:
            _load_symbol(DATA_KINDS[kind])(path)
        elif kind in CONFIG_KINDS:
            load_config(_load_symbol(CONFIG_KINDS[kind]), path, args.overrides)
        else:
            raise SystemExit(f"{path}: unknown --kind {kind!r}; choose from {', '.join([*CONFIG_KINDS, *DATA_KINDS])}")
        print(f"ok  {path}  ({kind})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stegobench",
        description="Out-of-context steganography benchmark: generate word-redefinition corpora, fine-tune, "
                    "evaluate covert code-word use, and rank submissions.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("gen", help="generate a word-redefinition corpus from a track config",
                       description="Generate a corpus (datasets + JSONL + manifest + card) from a track config.")
    p.add_argument("--config", required=True, help="track config YAML, e.g. configs/data/real-v1.yaml")
    p.add_argument("--out", required=True, help="output folder; written atomically (a temp folder, then a rename)")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed (same as --set seed=N)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds an earlier corpus (folders of other tools are never replaced)")
    _add_set(p)
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("train", help="fine-tune a LoRA adapter (runs `accelerate launch -m finetune.train`)",
                       description="Fine-tune a LoRA adapter on a generated corpus under accelerate; the config is "
                                   "validated first. Every config key: stegobench validate --describe finetune.")
    p.add_argument("--config", required=True, help="fine-tuning config YAML, e.g. configs/finetune/quickstart.yaml")
    p.add_argument("--accelerate-config", default=None, metavar="PROFILE",
                   help="accelerate profile: a name in configs/accelerate (cpu, cpu_ddp, single_gpu, multi_gpu, fsdp, "
                        "deepspeed_zero2) or a YAML path; default cpu, or single_gpu when CUDA is available")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in output_dir")
    p.add_argument("--merge", action="store_true", help="also write base + adapter merged, as safetensors, to output_dir/merged")
    _add_set(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate base, in-context baseline and adapters for covert code-word use",
                       description="Decode the corpus's held-out questions under each condition and score covert "
                                   "code-word use with intervals. Every config key: stegobench validate --describe eval.")
    p.add_argument("--config", default=str(REPO_ROOT / "configs/eval/default.yaml"), help="eval config YAML")
    p.add_argument("--data", help="corpus folder written by `stegobench gen`")
    p.add_argument("--model", help="base model: builtin name or local folder; for --backend mock, mock:POLICY")
    p.add_argument("--adapter", action="append", default=[], help="LoRA adapter folder; repeatable (e.g. seeds)")
    p.add_argument("--backend", default=None, help="hf, vllm or mock (overrides the config's backend)")
    p.add_argument("--out", help="run folder; written atomically")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier run")
    p.add_argument("--rescore", metavar="RUN", default=None,
                   help="recompute scores and tables of an earlier run from its samples, without decoding")
    _add_set(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("validate", help="check config and data files without running anything",
                       description="Load and validate config files; print 'ok' or a clear error naming the key.")
    p.add_argument("paths", nargs="*", help="config files; the kind is guessed from the folder (configs/data/...)")
    p.add_argument("--kind", default=None, help=f"kind of every file: {', '.join([*CONFIG_KINDS, *DATA_KINDS])}")
    p.add_argument("--describe", metavar="KIND", default=None,
                   help="print every option of a config kind with its type, default and meaning")
    _add_set(p)
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from data_gen.config import ConfigError
    from data_gen.provenance import OutputDirError

    try:
        return args.func(args)
    except (ConfigError, OutputDirError) as exc:
        print(f"stegobench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
