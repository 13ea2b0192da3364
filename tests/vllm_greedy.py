"""Greedy token ids from vLLM (CPU build) for the base model and, optionally, a LoRA adapter, as JSON.

    python tests/vllm_greedy.py MODEL_DIR [ADAPTER_DIR] < prompts.json

Run as a script (vLLM starts its engine in a subprocess, which needs the __main__ guard).
"""

import json
import sys

if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from stegobench.eval.backends.vllm_backend import stop_engine

    model, adapter = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    prompts = json.load(sys.stdin)
    rank = json.load(open(f"{adapter}/adapter_config.json"))["r"] if adapter else 16
    # A fixed KV cache, not vLLM's share of NUMA node 0 (which grows while these VMs run): tiny-llama keeps
    # 1 KiB per token, so 64 MiB holds every sequence of this test at once.
    llm = LLM(model=model, dtype="float32", enable_lora=adapter is not None, max_lora_rank=rank, max_model_len=512,
              seed=0, kv_cache_memory_bytes=64 << 20)
    sp = SamplingParams(temperature=0, max_tokens=8)
    out = {"base": [list(o.outputs[0].token_ids) for o in llm.generate(prompts, sp)]}
    if adapter:
        req = LoRARequest("adapter", 1, adapter)
        out["adapter"] = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, sp, lora_request=req)]
    stop_engine(llm)  # before exit: vLLM's exit-time cleanup races its own output thread
    print("RESULT " + json.dumps(out), flush=True)
