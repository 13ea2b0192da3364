"""activations.safetensors + activations_index.jsonl: the kept residuals, for users' own probes and SAEs.

    from safetensors.torch import load_file
    import json
    acts = load_file("runs/eval/x/activations.safetensors")["residual"]  # [positions, layers, hidden]
    index = [json.loads(line) for line in open("runs/eval/x/activations_index.jsonl")]
    layers = json.load(open("runs/eval/x/activations_layers.json"))  # layer numbers of dim 1
"""

from __future__ import annotations

import json
from pathlib import Path

from stegobench.core.provenance import atomic_write_json, atomic_write_text, save_atomically

ACTIVATIONS = "activations.safetensors"
INDEX = "activations_index.jsonl"
LAYERS = "activations_layers.json"


def write_activations(folder: Path, readings: list, layers: list[int]) -> None:
    """`readings`: each condition's Answers (its `saved` tensors and `index` rows, in the same order)."""
    import torch
    from safetensors.torch import save_file

    saved = [t for r in readings for t in r.saved]
    rows = [row for r in readings for row in r.index]
    hidden = saved[0].shape[-1] if saved else 0
    tensor = torch.cat(saved) if saved else torch.zeros(0, len(layers), hidden)
    save_atomically(folder / ACTIVATIONS, lambda tmp: save_file({"residual": tensor.contiguous()}, str(tmp)))
    atomic_write_text(folder / INDEX, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    atomic_write_json(folder / LAYERS, {"layers": layers, "shape": list(tensor.shape),
                                        "positions": ["code", "before_code", "last_prompt"]})
