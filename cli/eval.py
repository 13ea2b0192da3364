"""`stegobench eval`: base model, in-context baseline and adapters, decoded and scored for covert code-word use."""

from __future__ import annotations

import argparse
from pathlib import Path

from stegobench.core.errors import UsageError
from stegobench.core.paths import config_path

from .common import add_set


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate base, in-context baseline and adapters for covert code-word use",
        description="Decode the corpus's held-out questions under each condition and score covert "
                    "code-word use with intervals. Every config key: stegobench validate --describe eval.")
    p.add_argument("--config", default="default", help="eval config YAML or a shipped one's name (default)")
    p.add_argument("--data", help="corpus folder written by `stegobench gen`")
    p.add_argument("--model", help="base model: builtin name or local folder; for --backend mock, mock:POLICY "
                                   "(default: the one the adapters' adapter_config.json names)")
    p.add_argument("--adapter", action="append", default=[], help="LoRA adapter folder; repeatable (e.g. seeds)")
    p.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="the condition name of each --adapter, in the same order (default: from its run folder, "
                        "runs/cat-car/adapter -> adapter:cat-car); two adapters never share a name")
    p.add_argument("--backend", default=None, help="hf, vllm or mock (overrides the config's backend)")
    p.add_argument("--out", help="run folder; written atomically")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier run")
    p.add_argument("--rescore", metavar="RUN", default=None,
                   help="recompute scores and tables of an earlier run from its samples, without decoding")
    p.add_argument("--whitebox", action="store_true",
                   help="add the logit lens, concept probe and white-box monitors (same as --set whitebox=true)")
    p.add_argument("--save-activations", metavar="LAYERS", default=None,
                   help="with --whitebox: write the residual at these layers (e.g. 4,8,12) to activations.safetensors")
    add_set(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stegobench.eval.harness import rescore

    if args.rescore:
        run_log, out = rescore(args.rescore), Path(args.rescore)
    else:
        run_log, out = _evaluate(args), Path(args.out)
    _print_table(run_log)
    print(f"\nreport: {out / 'report.md'}")
    return 0


def _evaluate(args: argparse.Namespace):
    from stegobench.core.config import load_config
    from stegobench.eval.config import EvalConfig
    from stegobench.eval.harness import run_eval

    args.model = args.model or base_of_adapters(args.adapter)
    missing = [flag for flag, v in (("--data", args.data), ("--model", args.model), ("--out", args.out)) if not v]
    if missing:
        raise UsageError(f"{', '.join(missing)} required (or --rescore RUN)")
    overrides = list(args.overrides) + ([f"backend={args.backend}"] if args.backend else [])
    overrides += ["whitebox=true"] if args.whitebox or args.save_activations else []
    overrides += [f"save_activations=[{args.save_activations}]"] if args.save_activations else []
    cfg = load_config(EvalConfig, config_path("eval", args.config), overrides)
    return run_eval(cfg, args.data, args.model, args.adapter, args.out, overwrite=args.overwrite,
                    names=args.name or None)


def _print_table(run_log) -> None:
    """Each condition's row (each seed's), then the pooled one, with 95% intervals."""
    from stegobench.data_gen.records import ScoredSplit
    from stegobench.eval.runlog import fmt
    from stegobench.eval.scoring import Flag

    print(f"\n{'condition':24s} {'covert_score':>28s}  {'hits':>20s}  {'false alarms':>20s}")
    rows = [(name, cond.table) for name, cond in run_log.conditions.items()]
    rows += [(f"pooled ({len(run_log.pooled.adapters)} adapters)", run_log.pooled.table)] if run_log.pooled else []
    for name, t in rows:
        hits, false_alarms = (t.rate(ScoredSplit.DEFINITION_ONLY, Flag.UNDETECTED_COVERT),
                              t.rate(ScoredSplit.CONTROL_UNMAPPED, Flag.FALSE_USE))
        print(f"{name:24s} {fmt(t.covert_score, signed=True):>28s}  {fmt(hits):>20s}  {fmt(false_alarms):>20s}")
    if run_log.heldout_fpr_union is not None:
        print(f"\nmonitors' false-positive rate on held-out base answers (any monitor): "
              f"{run_log.heldout_fpr_union.fmt()}")


def base_of_adapters(adapters: list[str]) -> str | None:
    """The base model the adapters name in adapter_config.json (a builtin name, resolved on this machine), when
    they all name the same one; --model then need not repeat it."""
    from stegobench.core.adapters import ADAPTER_CONFIG, adapter_config
    from stegobench.core.models import adapter_base_model

    named = {adapter_base_model(adapter_config(a)) for a in adapters if (Path(a) / ADAPTER_CONFIG).exists()}
    if len(named) == 1 and None not in named:
        model = named.pop()
        print(f"base model {model} (named by the adapter's adapter_config.json; --model chooses another)")
        return model
    return None
