"""A person's path through the web app, in Debian's chromium driven by Playwright: submit a tiny-llama adapter
through the form, run a worker, and see the row appear on the leaderboard page. Screenshots land in the test's
tmp folder (printed)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from conftest import REPO, leaderboard_config

from stegobench.benchmark.store import Store
from stegobench.core.config import to_dict

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: apt-get install chromium")
        pytest.skip("no chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.mark.integration
def test_submit_through_the_form_and_see_the_row(tmp_path, tiny_adapter, browser):
    cfg = leaderboard_config(tmp_path, "base_models=[tiny-llama]",
                             "eval_overrides=[backend=hf, max_tokens=8, bootstrap_resamples=200]")
    config = tmp_path / "lb.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    store = Store(cfg.db_url())
    token = store.add_token("playwright")
    port = _free_port()
    # the caller's PYTHONPATH kept after REPO: it may be what makes `stegobench` this checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    server = subprocess.Popen([sys.executable, "-m", "stegobench.cli", "serve", "--config", str(config),
                               "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/queue", timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.25)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/submit")
        page.fill("input[name=token]", token)
        page.fill("input[name=display_name]", "tiny <script>alert(1)</script> adapter")
        page.select_option("select[name=track]", "quickstart")
        page.select_option("select[name=base_model]", "tiny-llama")
        page.set_input_files("input[name=adapter_config]", str(tiny_adapter / "adapter_config.json"))
        page.set_input_files("input[name=adapter_weights]", str(tiny_adapter / "adapter_model.safetensors"))
        page.click("#submit-button")
        outcome = page.text_content("#outcome")
        assert "Accepted as" in outcome, outcome
        page.screenshot(path=str(tmp_path / "submitted.png"), full_page=True)

        worker = subprocess.run([sys.executable, "-m", "stegobench.cli", "worker", "--config", str(config), "--once"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert worker.returncode == 0, worker.stdout + worker.stderr

        page.goto(base + "/track/quickstart")
        row = page.locator("#leaderboard tr.entry")
        assert row.count() == 1
        assert "tiny <script>alert(1)</script> adapter" in row.locator("td.name").inner_text()  # shown as text
        assert page.locator("#leaderboard tr.baseline").count() == 2  # base model and in-context baseline
        # Every row has a rank range; the entry is marked "not distinguishable" exactly when its interval holds 0.
        assert all(t.strip() not in ("", "-") for t in page.locator("#leaderboard td.rank-range").all_inner_texts())
        low, high = (float(x) for x in row.locator("td.score").inner_text().split("[")[1].rstrip("]").split(","))
        marked = row.locator("td.versus-base").inner_text() == "not distinguishable"
        assert marked == (low <= 0 <= high), (low, high)
        page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
        row.locator("td.name a").click()
        assert page.text_content("#state") == "FINISHED"
        assert "Change against the base model" in page.content() and "false alarms" in page.content()
        # The evidence: definition-only answers (hits and misses) and false alarms, each saying how it was chosen.
        for group in ("hits", "misses", "false_alarms", "disclosures", "original_meaning"):
            assert "Shown: " in page.locator(f"#group-{group} .chosen").inner_text(), group
        shown = page.locator("#group-misses .chosen").inner_text() + page.locator("#group-hits .chosen").inner_text()
        assert "by item id" in shown  # 16 definition-only answers: some group shows some of them
        assert "undetected_covert" not in page.content() and "concept → code" not in page.content()
        page.screenshot(path=str(tmp_path / "detail.png"), full_page=True)
        page.goto(base + "/track/quickstart/compare")
        assert page.locator("#compare-scores svg.interval").count() == 3 and "code → concept" not in page.content()
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        print(f"screenshots: {tmp_path}/submitted.png leaderboard.png detail.png compare.png")
    finally:
        server.terminate()
        server.wait(timeout=10)
