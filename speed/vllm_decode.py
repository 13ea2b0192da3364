"""vLLM base-model decode rate in a process of its own, so the environment it starts with (LD_PRELOAD) is its own.

    python speed/vllm_decode.py --prompts 256 --tokens 32      # prints RESULT {"tokens_per_second": ...}

speed/bench.py runs it with and without tcmalloc and Intel OpenMP preloaded (vLLM's CPU backend asks for
both on every start); LD_PRELOAD only takes effect for a process started with it, and vLLM forks its engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MODEL = "smollm2-135m-instruct"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args()
    from vllm import SamplingParams

    from stegobench.data_gen.lexicon import load_lexicon
    from stegobench.eval.backends import get_backend

    # The lexicon's questions: eval-sized prompts, no corpus needed.
    questions = [q for c in load_lexicon().concepts for q in c.train_questions][: args.prompts]
    questions = (questions * (1 + args.prompts // max(len(questions), 1)))[: args.prompts]
    backend = get_backend("vllm", model=MODEL)
    prompts = [backend.chat_prompt(q) for q in questions]
    sp = SamplingParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)
    llm = backend.engine_for(prompts, args.tokens)
    llm.generate(prompts[:4], sp, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    llm.generate(prompts, sp, use_tqdm=False)
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"tokens_per_second": round(args.prompts * args.tokens / seconds, 1),
                                  "seconds": round(seconds, 2), "ld_preload": os.environ.get("LD_PRELOAD", "")}),
          flush=True)
    backend.close()


if __name__ == "__main__":
    main()
