"""The GPU path end to end on tiny-llama: accelerate-launched LoRA training in bf16, eval on CUDA.

    make gpu-smoke                      # on a CUDA machine; elsewhere it says so and exits 0
    python tests/gpu_smoke.py [--out DIR]

Prints `stegobench env` (the device defaults every stage takes), then runs the real CLI commands: `gen` the
quickstart track, `train` tiny-llama for a few steps (accelerate profile and dtype from the devices), `eval`
with the hf backend on the GPU, and with vLLM when it is installed (adapters served as LoRA in one engine).
Each result is checked: the adapter moved, the eval ran on cuda in the default dtype. Not a pytest file:
CI machines have no GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> float:
    cmd = [sys.executable, "-m", "stegobench.cli", *args]
    print("\n$ stegobench " + " ".join(args), flush=True)
    start = time.perf_counter()
    code = subprocess.call(cmd, cwd=REPO)
    if code != 0:
        raise SystemExit(f"gpu-smoke: `stegobench {args[0]}` failed with exit code {code}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="work folder (default: a new temporary folder)")
    args = p.parse_args(argv)
    from stegobench.core.device import device_defaults
    from stegobench.core.machine import read_machine

    facts = read_machine()
    if not facts.gpus:
        print("gpu-smoke: no CUDA device on this machine (torch sees none); nothing to run. "
              "Run `make gpu-smoke` on a GPU machine.")
        return 0
    defaults = device_defaults(facts)
    subprocess.call([sys.executable, "-m", "stegobench.cli", "env"], cwd=REPO)
    work = Path(args.out or tempfile.mkdtemp(prefix="stegobench-gpu-smoke-"))
    data, adapter = work / "data", work / "adapter"
    times = {"gen": _run("gen", "--config", "configs/data/quickstart.yaml", "--out", str(data), "--overwrite")}
    times["train"] = _run("train", "--config", "configs/finetune/quickstart.yaml", "--overwrite",
                          *[a for s in (f"data={data}", f"output_dir={adapter}", "model=tiny-llama", "max_steps=10",
                                        "save_steps=0", "logging_steps=1") for a in ("--set", s)])
    manifest = json.loads((adapter / "train_manifest.json").read_text())
    losses = [h["loss"] for h in manifest["loss_history"]]
    assert losses[-1] < losses[0], f"training did not lower the loss: {losses}"
    backends = ["hf"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
    for backend in backends:
        out = work / f"eval-{backend}"
        times[f"eval_{backend}"] = _run(
            "eval", "--data", str(data), "--model", "tiny-llama", "--adapter", str(adapter), "--backend", backend,
            "--out", str(out), "--overwrite", "--set", "max_items=32", "--set", "bootstrap_resamples=200",
            "--set", "cloze=false")
        doc = json.loads((out / "results.json").read_text())
        identity = next(c["backend"] for c in doc["conditions"].values() if c.get("adapter"))
        assert identity.get("dtype") == defaults.eval_dtype, identity
        if backend == "hf":
            assert identity.get("device") == "cuda", identity
        else:
            assert identity.get("adapter_served") == defaults.vllm_adapter_serving, identity
    print(f"\ngpu-smoke: passed on {len(facts.gpus)} x {facts.gpus[0].name}: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; train losses {losses[0]:.3f} -> {losses[-1]:.3f}"
          + ("" if "vllm" in backends else "; vLLM not installed: its GPU path was not run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
