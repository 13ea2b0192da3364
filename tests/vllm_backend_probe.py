"""Greedy answers and log-probabilities from the vLLM backend, printed as JSON, for tests/test_backends.py.

    python tests/vllm_backend_probe.py MODEL ADAPTER < prompts.json

Runs as a script: vLLM starts its engine in a subprocess, which needs the __main__ guard.
"""

import json
import sys

if __name__ == "__main__":
    from stegobench.eval.backends import Sampling, get_backend

    model, adapter = sys.argv[1], sys.argv[2]
    prompts = json.load(sys.stdin)
    sampling = Sampling(max_tokens=8)
    out = {}
    # The GPU default: one engine serves the base model and, through with_adapter, each adapter as LoRA (the
    # saved adapter loads as vLLM's LoRARequest; scores come from vLLM's prompt_logprobs).
    shared = get_backend("vllm", model, options={"merge_adapter": False, "score_with": "vllm"}, lora_adapters=[adapter])
    view = shared.with_adapter(adapter)
    out["shared"] = {"base_text": shared.generate(prompts, sampling), "text": view.generate(prompts, sampling),
                     "score": view.score(prompts[:2], [" a cat.", " a car."]),
                     "engines": len({id(shared.llm), id(view.llm)})}
    view.close()
    shared.close()
    # The CPU default: the merged adapter's weights swapped into the base model's engine and back.
    swapped = get_backend("vllm", model, options={"merge_adapter": True})
    first_base = swapped.generate(prompts, sampling)
    merged_view = swapped.with_adapter(adapter)
    out["swapped"] = {"first_base_text": first_base, "text": merged_view.generate(prompts, sampling),
                      "score": merged_view.score(prompts[:2], [" a cat.", " a car."])}
    out["swapped"].update(base_text_after=swapped.generate(prompts, sampling),
                          engines=len({id(swapped.llm), id(merged_view.llm)}),
                          identity_equal=merged_view.identity() == get_backend(
                              "vllm", model, adapter, options={"merge_adapter": True}).identity(),
                          merged_folder=str(merged_view.served))
    merged_view.close()
    swapped.close()
    print("RESULT " + json.dumps(out), flush=True)
