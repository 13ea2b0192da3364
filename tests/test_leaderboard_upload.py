"""Web uploads under faults: never a 500 on a fresh server, nothing left behind by a killed one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, leaderboard_config

from stegobench.benchmark.artifacts import staging
from stegobench.benchmark.store import Store
from stegobench.benchmark.web.app import create_app

FIRST_UPLOADS = Path(__file__).with_name("first_uploads.py")


def test_parallel_first_uploads_to_a_fresh_server_never_get_a_500(tmp_path, tiny_adapter):
    """A lazy `transformers` import raced in request threads: 7 of 8 first uploads failed with 500."""
    out = subprocess.run([sys.executable, str(FIRST_UPLOADS), str(tmp_path), str(tiny_adapter), "8"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    codes = json.loads(out.stdout.splitlines()[-1])
    assert len(codes) == 8 and sorted(set(codes)) == [201, 422], codes  # one accepted, 7 duplicates of it


def test_start_up_removes_what_a_killed_upload_left_and_spares_live_ones(tmp_path):
    cfg = leaderboard_config(tmp_path)
    code = ("import sys, time\nfrom pathlib import Path\nfrom stegobench.benchmark.artifacts import staging\n"
            "with staging(Path(sys.argv[1])) as s:\n"
            "    (s / 'adapter_model.safetensors').write_bytes(b'x' * 4096)\n"
            "    print(s, flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg.data_path())], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    left = Path(proc.stdout.readline().strip())
    proc.kill()  # SIGKILL mid-upload: no finally, no clean-up of its own
    proc.wait()
    assert (left / "adapter_model.safetensors").exists()
    with staging(cfg.data_path()) as live:  # another process's upload in progress
        create_app(cfg, Store(cfg.db_url()))
        assert not left.exists() and live.exists()
    assert not any((cfg.data_path() / "incoming").glob("*"))
