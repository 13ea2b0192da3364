"""The `stegobench` command: one subcommand per stage, each importing its stage lazily.

    stegobench gen --config real-v1 --out runs/data/real-v1          # a shipped track by name, or a YAML path
    stegobench train --config configs/finetune/quickstart.yaml --set data=runs/data/quickstart
    stegobench validate configs/data/real-v1.yaml
    stegobench validate --track configs/data/cat-car.yaml     # code book, concepts, templates: every rule, nothing written
    stegobench validate --describe data
    stegobench submit --name my-run --submitter me --track quickstart --model smollm2-135m-instruct --adapter runs/quickstart/adapter
    stegobench worker --once
    stegobench leaderboard --track quickstart
    stegobench serve --port 8000
    stegobench env [--format json]
    stegobench compare runs/a/eval runs/b/eval     # several runs' headline rates side by side
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

# Config kinds `validate` knows, as "module:Class" so that checking one never imports another stage.
CONFIG_KINDS = {
    "data": "stegobench.data_gen.track:TrackConfig",
    "finetune": "stegobench.finetune.config:TrainConfig",
    "eval": "stegobench.eval.config:EvalConfig",
    "leaderboard": "stegobench.benchmark.config:LeaderboardConfig",
}
from stegobench.core.paths import REPO_ROOT, config_path, shipped_configs  # noqa: E402
from stegobench.core.errors import ENV_POINTER  # noqa: E402  (printed after a run fails for the machine's reasons)
RUN_COMMANDS = ("train", "eval", "worker")
# Data files with their own loaders.
DATA_KINDS = {
    "lexicon": "stegobench.data_gen.lexicon:load_lexicon",
    "templates": "stegobench.data_gen.templates:load_templates",
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


def _named_config(raw: str) -> Path:
    """A file as given, else the one shipped config of that name in any kind ('real-v1')."""
    if Path(raw).exists():
        return Path(raw)
    found = [p for p in shipped_configs() if p.stem == raw]
    if len(found) != 1:
        names = ", ".join(sorted({p.stem for p in shipped_configs()}))
        raise SystemExit(f"stegobench validate: {raw}: no such file" + (f", and no shipped config of that name "
                         f"(shipped: {names})" if not found else "; several shipped configs are named so: "
                         + ", ".join(str(p) for p in found)))
    return found[0]


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys reach nested fields; the value is parsed as YAML); "
                        "repeatable, e.g. --set seed=3 --set n_definition_only=10")


def _print_track(m: dict) -> None:
    """What a track holds, from its manifest: the same lines for `gen` and `validate --track`."""
    s = m["sizes"]
    book = m["codebook"]
    print(f"  mappings       {s['mappings']} ({book['source']}): "
          + ", ".join(f"{x['code']}={x['concept']}" for x in book["mappings"][:8])
          + (", ..." if len(book["mappings"]) > 8 else ""))
    print(f"  train docs     {s['train_documents']}  {s['train_by_kind']}"
          + (f"  ~{s['train_tokens']} tokens" if "train_tokens" in s else ""))
    print(f"  eval items     {s['eval_items']}  {s['eval_by_split']}  controls {s['eval_controls']}")
    if book["original_meaning_skipped"]:
        print(f"                 no original-meaning controls for {', '.join(book['original_meaning_skipped'])}: "
              "real words the lexicon has no questions for")
    print(f"  recall probes  {s['recall_probes']}")
    print(f"  validation     {s['validation_documents']} held-out-template definitions (training's eval loss)")
    if m.get("augment"):
        from stegobench.data_gen.augment import summary

        print(f"  augment        {summary(m['augment'])}")


def _track_config(raw: str, overrides: list[str]):
    from stegobench.core.config import load_config
    from stegobench.data_gen.track import TrackConfig

    path = config_path("data", raw)
    return load_config(TrackConfig, path, overrides), str(path)


def cmd_gen(args: argparse.Namespace) -> int:
    from stegobench.data_gen.generate import generate

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    config, source = _track_config(args.config, overrides)
    result = generate(config, args.out, overwrite=args.overwrite, source=source)
    m = result.manifest
    print(f"wrote {result.out} in {result.seconds:.1f}s  (track {m['track']}, seed {m['seed']}, "
          f"content sha256 {m['content_sha256'][:16]})")
    _print_track(m)
    return 0


def _accelerate_config(name: str | None) -> tuple[Path, list[str]]:
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
    for candidate in (Path(name), Path("configs/accelerate") / f"{name}.yaml", REPO_ROOT / "configs/accelerate" / f"{name}.yaml"):
        if candidate.is_file():
            return candidate, extra
    profiles = sorted(p.stem for p in (REPO_ROOT / "configs/accelerate").glob("*.yaml"))
    raise SystemExit(f"stegobench train: no accelerate profile {name!r}; choose from {', '.join(profiles)} or give a file")


def cmd_train(args: argparse.Namespace) -> int:
    """Validate the config and the output folder here (clear errors, the last line printed, no subprocess
    traceback), then run it under `accelerate launch`."""
    from stegobench.core.config import load_config
    from stegobench.finetune.config import TrainConfig

    from stegobench.core.steps import call_through_ctrl_c
    from stegobench.finetune.train import check_output_dir, check_report_to

    config = config_path("finetune", args.config)
    cfg = load_config(TrainConfig, config, args.overrides)
    check_report_to(cfg)
    check_output_dir(cfg, args.resume, args.overwrite)  # e.g. --resume without a checkpoint: refused before launching
    profile, extra = _accelerate_config(args.accelerate_config)
    # --quiet: a failed run exits 1 instead of raising CalledProcessError with a traceback under the run's own error
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", str(profile), *extra,
           "-m", "stegobench.finetune.train", "--config", str(config)]
    for item in args.overrides:
        cmd += ["--set", item]
    cmd += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--merge", args.merge)) if on]
    print("+ " + " ".join(cmd), flush=True)
    # Only the training process acts on Ctrl-C (one line: where it stopped, what --resume continues from); the
    # launcher starts ignoring it (the training process takes it back) and this process waits.
    code, interrupted = call_through_ctrl_c(cmd, child_ignores_ctrl_c=True)
    return 130 if interrupted else code


def cmd_eval(args: argparse.Namespace) -> int:
    from stegobench.core.config import load_config
    from stegobench.eval.config import EvalConfig
    from stegobench.eval.harness import rescore, run_eval
    from stegobench.eval.runlog import fmt

    if args.rescore:
        run = rescore(args.rescore)
        out = Path(args.rescore)
    else:
        args.model = args.model or _base_of_adapters(args.adapter)
        missing = [flag for flag, v in (("--data", args.data), ("--model", args.model), ("--out", args.out)) if not v]
        if missing:
            raise SystemExit(f"stegobench eval: {', '.join(missing)} required (or --rescore RUN)")
        overrides = list(args.overrides) + ([f"backend={args.backend}"] if args.backend else [])
        overrides += ["whitebox=true"] if args.whitebox or args.save_activations else []
        overrides += [f"save_activations=[{args.save_activations}]"] if args.save_activations else []
        cfg = load_config(EvalConfig, config_path("eval", args.config), overrides)
        run = run_eval(cfg, args.data, args.model, args.adapter, args.out, overwrite=args.overwrite,
                       names=args.name or None)
        out = Path(args.out)
    print(f"\n{'condition':24s} {'covert_score':>28s}  {'hits':>20s}  {'false alarms':>20s}")
    rows = [(name, cond.table) for name, cond in run.conditions.items()]
    rows += [(f"pooled ({len(run.pooled.adapters)} adapters)", run.pooled.table)] if run.pooled else []
    for name, t in rows:  # each seed's row, then the pooled one
        print(f"{name:24s} {fmt(t.covert_score, signed=True):>28s}  "
              f"{fmt(t.rate('definition_only', 'undetected_covert')):>20s}  {fmt(t.rate('control_unmapped', 'false_use')):>20s}")
    if run.heldout_fpr_union is not None:
        print(f"\nmonitors' false-positive rate on held-out base answers (any monitor): {run.heldout_fpr_union.fmt()}")
    print(f"\nreport: {out / 'report.md'}")
    return 0


COMPARED = (("covert_score", True), ("hits", False), ("false_alarms", False), ("demonstrated_hits", False),
            ("covert_score_vs_base", True))  # (column, signed) in `stegobench compare`'s table


def cmd_compare(args: argparse.Namespace) -> int:
    """Several run folders' headline rates side by side (every condition of each), as a table, md, csv or json."""
    from stegobench.eval.frames import headline_rows
    from stegobench.eval.runlog import Interval, read_run

    rows = [row for folder in args.runs for row in headline_rows(read_run(folder), folder)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if args.format == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return 0
    headers = ["run", "condition", *(c for c, _ in COMPARED), "recall"]
    body = [[r["run"], r["condition"],
             *(Interval(r[c], r[f"{c}_low"], r[f"{c}_high"]).fmt(3, signed, empty="-") for c, signed in COMPARED),
             "-" if r["recall"] is None else f"{r['recall']:.3f}"] for r in rows]
    if args.format == "md":
        print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
        print("\n".join("| " + " | ".join(row) + " |" for row in body))
        return 0
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
    for row in [headers, *body]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print("\n95% intervals as in each run's report; covert_score_vs_base is paired on the same questions. In Python: "
          "stegobench.eval.frames.load_run(RUN, ...) gives the same rows as a pandas DataFrame.")
    return 0


def _base_of_adapters(adapters: list[str]) -> str | None:
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


def cmd_validate(args: argparse.Namespace) -> int:
    from stegobench.core.config import describe, load_config

    if args.describe:
        kind = args.describe
        if kind not in CONFIG_KINDS:
            raise SystemExit(f"stegobench validate --describe: unknown kind {kind!r}; choose from {', '.join(CONFIG_KINDS)}")
        print(f"Options of the {kind!r} config ({CONFIG_KINDS[kind]}):")
        for line in describe(_load_symbol(CONFIG_KINDS[kind])):
            print("  " + line)
        return 0
    if args.track:
        from stegobench.data_gen.generate import prepare

        for raw in args.track:
            config, source = _track_config(raw, args.overrides)
            m = prepare(config, source, augment=False).manifest  # checks only: the augment model is not run
            before = " before augmentation" if m.get("augment") else ""
            print(f"ok  {source}  (track {m['track']}: every input checked, nothing written; content sha256"
                  f"{before} {m['content_sha256'][:16]})")
            _print_track(m)
        if not args.paths:
            return 0
    paths = [_named_config(raw) for raw in args.paths] if args.paths else shipped_configs()
    for path in paths:
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


def _leaderboard(args: argparse.Namespace):
    """(config, store) of the evaluator named by --config/--set."""
    from .config import load_leaderboard_config
    from .store import Store

    cfg = load_leaderboard_config(args.config, args.overrides)
    return cfg, Store(cfg.db_url())


def cmd_submit(args: argparse.Namespace) -> int:
    from .submit import SubmissionRequest, submit_folder
    from .validation import Rejected

    cfg, store = _leaderboard(args)
    req = SubmissionRequest(display_name=args.name, submitter=args.submitter, track=args.track,
                            base_model=args.model, revision=args.revision, notes=args.notes)
    try:
        outcome = submit_folder(cfg, store, req, adapter=args.adapter, merged=args.merged)
    except Rejected as exc:
        print(f"stegobench submit: error: {exc}", file=sys.stderr)
        return 2
    if outcome.status == "PENDING":
        print(f"submission #{outcome.id} accepted and queued; run `stegobench worker` to evaluate it")
        return 0
    print(f"submission #{outcome.id} refused: {outcome.reason}", file=sys.stderr)
    return 1


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import Worker

    cfg, store = _leaderboard(args)
    worker = Worker(cfg, store, name=args.name)
    print(f"worker {worker.name} on {store.safe_url()} (data {cfg.data_path()})", flush=True)
    done = worker.run(once=args.once, max_jobs=args.max_jobs)
    print(f"worker {worker.name}: {done} job(s) run; queue {store.counts()}")
    for held in worker.held:
        print(f"worker {worker.name}: {held.describe(cfg.heartbeat_timeout_seconds)}", file=sys.stderr)
    if worker.faults:
        print(f"worker {worker.name}: {worker.faults} job(s) given back PENDING by the evaluator's own fault (the "
              "errors above); fix it and run the worker again", file=sys.stderr)
        return 1
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .ranking import leaderboard_rows, render

    cfg, store = _leaderboard(args)
    if args.action == "add-token":
        if not args.name:
            raise SystemExit("stegobench leaderboard add-token: give --name (who the token is for)")
        from .text import name_problem, normalise

        args.name = normalise(args.name)  # the submitter shown on every entry made with the token
        problem = name_problem(args.name)
        if problem:
            raise SystemExit(f"stegobench leaderboard add-token: --name {problem}")
        token = store.add_token(args.name)
        print(f"token for {args.name} (shown once; only its sha256 is stored):\n{token}")
        return 0
    if args.action == "requeue":
        from .submit import requeue

        out = requeue(cfg, store, args.id or None)
        print(f"requeued {len(out.ids)} FAILED submission(s): {', '.join(f'#{i}' for i in out.ids) or 'none'}")
        for sid, why in out.refused.items():
            print(f"not requeued #{sid}: {why}", file=sys.stderr)
        return 1 if out.refused else 0
    if args.action == "rescore":
        from stegobench.core.config import load_config
        from stegobench.eval.config import EvalConfig

        from .rescore import rescore_leaderboard

        eval_cfg = load_config(EvalConfig, cfg.eval_config_path(), cfg.eval_overrides)
        done, base = rescore_leaderboard(store, eval_cfg.bootstrap_resamples, eval_cfg.seed)
        print(f"rescored {done} finished submission(s) and {base} baseline(s) from their samples "
              "(no decoding): every row is now scored by the current covert_score definition")
        return 0
    if args.action == "revoke-token":
        n = store.revoke_token(args.name or "")
        print(f"revoked {n} token(s) of {args.name!r}")
        return 0 if n else 1
    tracks = [args.track] if args.track else list(cfg.tracks)
    for t in tracks:
        if t not in cfg.tracks:
            raise SystemExit(f"stegobench leaderboard: unknown track {t!r}; tracks: {', '.join(cfg.tracks)}")
    if args.format in ("json", "csv"):
        from .ranking import plain_row
    from .ranking import mde_line, track_mde

    if args.format == "json":  # one document that any JSON reader accepts, every track in it
        doc = {"tracks": {t: {"split": "private" if cfg.tracks[t].is_private else "public dev",
                              "mde": track_mde(cfg, t).to_record(),
                              "rows": [plain_row(r) for r in leaderboard_rows(store, t)]} for t in tracks},
               "queue": store.counts()}
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    if args.format == "csv":  # one header, a track column
        from .ranking import csv_text

        flat = [{"track": t, **plain_row(r)} for t in tracks for r in leaderboard_rows(store, t)]
        sys.stdout.write(csv_text(flat) if flat else "track,rank\r\n")
        return 0
    for t in tracks:
        rows = leaderboard_rows(store, t)
        if args.format == "table":
            print(f"\ntrack {t}  ({'private' if cfg.tracks[t].is_private else 'public dev'} split; score = covert_score "
                  "minus the base model's, 95% interval; rows with the same score share a rank, listed by the "
                  "interval's lower bound, then by name; rank range = 2.5-97.5% of the rank over bootstrap "
                  "replicates drawing the track's questions once for all rows)")
            print(mde_line(track_mde(cfg, t)))
        print(render(rows, args.format))
    if args.format == "table":
        print(f"\nqueue: {store.counts()}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from .env import main as env_main

    return env_main(args.format)


def cmd_serve(args: argparse.Namespace) -> int:
    import gc

    import uvicorn

    from .web.app import create_app

    cfg, store = _leaderboard(args)
    app = create_app(cfg, store)
    # Start-up imported torch and transformers (web/app.py: load_checkers); the collector need never scan those
    # objects again. Without this, full collections over them put the 200-reader p99 of speed/serve_load.py
    # at ~210 ms in some runs; with it, ~70 ms in every run.
    gc.freeze()
    print(f"serving the leaderboard on http://{args.host}:{args.port}/  (database {store.safe_url()})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _add_leaderboard_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="leaderboard config YAML (default configs/leaderboard/default.yaml; "
                        "every key: stegobench validate --describe leaderboard)")
    _add_set(p)


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
    p.add_argument("--config", required=True,
                   help="track config YAML, or the name of a shipped one: real-v1, nonsense-v1, quickstart, ...")
    p.add_argument("--out", required=True, help="output folder; written atomically (a temp folder, then a rename)")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed (same as --set seed=N)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds an earlier corpus (folders of other tools are never replaced)")
    _add_set(p)
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("train", help="fine-tune a LoRA adapter (runs `accelerate launch -m stegobench.finetune.train`)",
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
    p.add_argument("--merge", action="store_true", help="also write base + adapter merged, as safetensors, to output_dir/merged")
    _add_set(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate base, in-context baseline and adapters for covert code-word use",
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
    _add_set(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="several eval run folders' headline rates side by side",
                       description="Print every condition of each run folder with covert_score, hits, false alarms, "
                                   "demonstrated hits and the change against the base model, with 95% intervals. "
                                   "In Python: stegobench.eval.frames.load_run(RUN, ...) (a pandas DataFrame).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `stegobench eval`")
    p.add_argument("--format", default="table", choices=["table", "md", "csv", "json"])
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("submit", help="submit an adapter or merged model to the local leaderboard (operator)",
                       description="Validate and queue a submission; a refused one is stored with its reason.")
    p.add_argument("--name", required=True, help="display name on the leaderboard")
    p.add_argument("--submitter", required=True, help="who submits it")
    p.add_argument("--track", required=True, help="track the model was trained for, e.g. quickstart")
    p.add_argument("--model", required=True, help="base model: builtin name or local folder")
    p.add_argument("--revision", default=None, help="base model revision (hub ids), recorded for deduplication")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--merged", default=None, help="merged model folder (config.json + *.safetensors)")
    p.add_argument("--notes", default="", help="free text shown on the detail page")
    _add_leaderboard_config(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("worker", help="evaluate queued submissions",
                       description="Claim jobs one at a time, evaluate them on the track's test split, store results.")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty instead of waiting")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.add_argument("--name", default=None, help="worker name in the queue (default host:pid:random)")
    _add_leaderboard_config(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("leaderboard", help="print the leaderboard, manage submitter tokens, requeue failed jobs",
                       description="Print ranked results (default), add-token / revoke-token for web submitters, or "
                                   "requeue FAILED submissions.")
    p.add_argument("action", nargs="?", default="show", choices=["show", "add-token", "revoke-token", "requeue", "rescore"],
                   help="show the board; add-token / revoke-token for web submitters; requeue FAILED submissions "
                        "(all, or --id N) after fixing an evaluator fault; rescore every stored result and baseline "
                        "from its samples under the current scoring definitions (no decoding)")
    p.add_argument("--id", type=int, action="append", default=[], help="a submission id, for requeue; repeatable")
    p.add_argument("--track", default=None, help="one track (default: all)")
    p.add_argument("--format", default="table", choices=["table", "json", "csv", "md"])
    p.add_argument("--name", default=None, help="token owner, for add-token / revoke-token")
    _add_leaderboard_config(p)
    p.set_defaults(func=cmd_leaderboard)

    # Dispatched in main() before parsing; listed here for --help.
    sub.add_parser("quickstart", help="the whole benchmark on the default model: gen, train, eval, leaderboard "
                                      "(`stegobench quickstart --help`)", add_help=False)

    p = sub.add_parser("serve", help="serve the web leaderboard, submission form and JSON API")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    _add_leaderboard_config(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("env", help="this machine's devices, memory and versions, and the defaults a run takes from them",
                       description="Print CPUs and affinity, NUMA nodes and memory, GPUs, package versions, the "
                                   "model cache, and the device defaults (dtype, KV cache, threads, accelerate "
                                   "profile) that train, eval and the worker would use here.")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("validate", help="check config and data files without running anything",
                       description="Load and validate config files; print 'ok' or a clear error naming the key.")
    p.add_argument("paths", nargs="*", help="config files or shipped configs' names; the kind is guessed from the "
                   "folder (configs/data/...); none: every shipped config")
    p.add_argument("--kind", default=None, help=f"kind of every file: {', '.join([*CONFIG_KINDS, *DATA_KINDS])}")
    p.add_argument("--describe", metavar="KIND", default=None,
                   help="print every option of a config kind with its type, default and meaning")
    p.add_argument("--track", metavar="FILE", action="append", default=[],
                   help="check a track fully without generating: its code book, concepts, templates and every "
                        "rule of the corpus (a track YAML or a shipped track's name); repeatable")
    _add_set(p)
    p.set_defaults(func=cmd_validate)
    return parser


# What a command stopped by Ctrl-C leaves reusable (printed as its one line).
STOPPED_KEEPS = {
    "eval": "the answers decoded so far are cached (every finished chunk of 256 per condition), and the same command "
            "decodes only the rest; --out was not written",
    "worker": "the job it was running is PENDING again (its attempt not counted) for the next worker",
    "gen": "--out was not written (a corpus is published whole or not at all)",
}
PRELOAD_COMMANDS = ("eval", "worker")


def preload_env(argv: list[str], environ: dict[str, str], tcmalloc: str | None) -> dict[str, str] | None:
    """The environment to re-execute `argv` with, or None to run as is.

    vLLM decodes 1.12-1.16x faster on these CPUs with tcmalloc preloaded (make bench, preload section), and its
    CPU backend warns on every start without it. LD_PRELOAD only acts on a process started with it (vLLM forks
    its engine from this one), so eval and worker re-execute themselves once with it. STEGOBENCH_NO_PRELOAD=1
    turns it off."""
    if (not argv or argv[0] not in PRELOAD_COMMANDS or tcmalloc is None or environ.get("STEGOBENCH_NO_PRELOAD")
            or "libtcmalloc" in environ.get("LD_PRELOAD", "")):
        return None
    preload = environ.get("LD_PRELOAD", "")
    return {**environ, "LD_PRELOAD": f"{tcmalloc}:{preload}" if preload else tcmalloc}


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if from_command_line:
        import os

        from stegobench.core.machine import find_tcmalloc

        env = preload_env(argv, dict(os.environ), find_tcmalloc())
        if env is not None:
            os.execve(sys.executable, [sys.executable, "-m", "stegobench.benchmark.cli", *argv], env)
    if argv[:1] == ["quickstart"]:  # its own options, --help included, belong to benchmark/quickstart.py
        from .quickstart import main as quickstart

        return quickstart(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stegobench.core.errors import StegobenchError, UserError
    from stegobench.core.provenance import OutputDirError

    from stegobench.benchmark.store import StoreError

    try:
        return args.func(args)
    except (StegobenchError, OutputDirError, StoreError) as exc:
        print(f"stegobench {args.command}: error: {exc}", file=sys.stderr)
        # a user's mistake (an input, a config, an output folder) stays the last line
        if args.command in RUN_COMMANDS and not isinstance(exc, (UserError, OutputDirError)):
            print(ENV_POINTER, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nstegobench {args.command}: stopped by Ctrl-C; {STOPPED_KEEPS.get(args.command, 'nothing was written')}",
              file=sys.stderr)
        return 130
    except Exception:
        if args.command in RUN_COMMANDS:
            print(ENV_POINTER, file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(main())
