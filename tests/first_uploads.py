"""Helper for test_parallel_first_uploads_to_a_fresh_server_never_get_a_500: in a fresh interpreter (nothing
imported yet), create the app and send N uploads of one adapter at once; print their status codes as JSON."""

import json
import sys
import threading
from pathlib import Path

if __name__ == "__main__":
    tmp, adapter, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import leaderboard_config
    from fastapi.testclient import TestClient

    from stegobench.benchmark.store import Store
    from stegobench.benchmark.web.app import create_app

    cfg = leaderboard_config(tmp, f"submissions_per_hour={n}")
    store = Store(cfg.db_url())
    auth = {"Authorization": f"Bearer {store.add_token('first')}"}
    client = TestClient(create_app(cfg, store), raise_server_exceptions=False)
    files = {"adapter_config": ("c.json", (adapter / "adapter_config.json").read_bytes()),
             "adapter_weights": ("w", (adapter / "adapter_model.safetensors").read_bytes())}
    codes: list[int] = []
    start = threading.Barrier(n)

    def upload(i: int) -> None:
        start.wait()
        data = {"display_name": f"first {i}", "track": "quickstart", "base_model": "tiny-llama"}
        codes.append(client.post("/api/submissions", data=data, files=files, headers=auth).status_code)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(codes))
