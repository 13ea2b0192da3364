"""The `stegobench` command: one module per subcommand, each with `add_parser(subparsers)` and `run(args)` and each
importing its stage only when it runs; `main.py` builds the parser from them and maps errors to exit codes.

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
    stegobench quickstart                          # the whole benchmark on the default model

`python -m stegobench.cli ARGS` is the same command without its console script.
"""
