"""Helper for test_concurrent_claimers_never_share_a_job: claim jobs until none is left, print their ids."""

import sys

from stegobench.benchmark.store import Store

if __name__ == "__main__":
    store = Store(sys.argv[1])
    while (job := store.claim(sys.argv[2])) is not None:
        print(job.id, flush=True)
