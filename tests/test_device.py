"""Device defaults and the KV-cache size, decided from fake machines: a small NUMA node 0, many cores, GPUs."""

from __future__ import annotations

import pytest

from stegobench.core.device import device_defaults, kv_bytes_per_token, plan_kv_cache, tensor_parallel_size
from stegobench.core.errors import ResourceError
from stegobench.core.machine import GiB, Gpu, MachineFacts, NumaNode, read_machine

SMOLLM2 = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576}
LLAMA_70B = {"num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "hidden_size": 8192}
WEIGHTS_135M = 540 * 2**20  # SmolLM2-135M in float32


def machine(node_gib: list[float], total_gib: float = 23.0, cpus: int = 2, affinity=None, gpus=()) -> MachineFacts:
    """Nodes with the given available memory; CPUs split evenly between them."""
    per = max(cpus // len(node_gib), 1)
    nodes = tuple(NumaNode(i, tuple(range(i * per, (i + 1) * per)), int(g * GiB), int(g * GiB))
                  for i, g in enumerate(node_gib))
    return MachineFacts(cpus, tuple(affinity if affinity is not None else range(cpus)), nodes, int(total_gib * GiB),
                        int(total_gib * GiB), tuple(gpus))


def test_kv_bytes_per_token_counts_keys_and_values_of_every_layer():
    # 2 (K, V) x 30 layers x 3 KV heads x 64 head size x 4 bytes: the 0.09 GiB vLLM needed for 2048 tokens.
    assert kv_bytes_per_token(SMOLLM2, "float32") == 46080
    assert kv_bytes_per_token(SMOLLM2, "bfloat16") == 23040
    assert kv_bytes_per_token(SMOLLM2, "float32") * 2048 == pytest.approx(0.09 * GiB, rel=0.05)


@pytest.mark.parametrize("node0_gib", [3, 10, 15])
def test_kv_cache_is_sized_from_the_run_not_from_a_share_of_node0(node0_gib):
    """96 prompts of <= 100 tokens + 48 new ones: every sequence fits at once whatever node 0 holds; the size
    is the run's need (x2 headroom for the longer prompts of later calls), capped at half of what the
    weights leave on the node, never a share of the node's total."""
    per_token = kv_bytes_per_token(SMOLLM2, "float32")
    plan = plan_kv_cache(machine([node0_gib]), per_token, 148, 96, 2048, weights_bytes=WEIGHTS_135M)
    assert plan.tokens_per_sequence == 256  # rounded up to vLLM's 128-token blocks
    need = per_token * (256 * 96 * 2 + 128)  # + vLLM's null block
    assert plan.bytes == min(need, int((node0_gib * GiB - WEIGHTS_135M) * 0.5))
    assert plan.sequences == 96
    assert "NUMA node 0" in plan.describe()
    if node0_gib >= 10:
        assert plan.bytes == need  # the same on a 10 and a 15 GiB node


def test_kv_cache_reads_the_node_vllm_binds_to_not_the_machine_total():
    """Total RAM 23 GiB, node 0 only 1.5 GiB available: the cache must fit node 0, so it shrinks to half of
    what the weights leave there, and fewer sequences run at once."""
    per_token = kv_bytes_per_token(SMOLLM2, "float32")
    plan = plan_kv_cache(machine([1.5], total_gib=23), per_token, 148, 256, 2048, weights_bytes=WEIGHTS_135M)
    assert plan.bytes == int((1.5 * GiB - WEIGHTS_135M) * 0.5)
    assert plan.available_bytes == int(1.5 * GiB)
    assert 1 <= plan.sequences < 256


def test_kv_cache_follows_the_process_affinity_to_its_node():
    facts = machine([0.6, 12], cpus=4, affinity=[2, 3])  # this process runs on node 1's CPUs
    plan = plan_kv_cache(facts, kv_bytes_per_token(SMOLLM2, "float32"), 148, 96, 2048, weights_bytes=WEIGHTS_135M)
    assert plan.where == "NUMA node 1" and plan.sequences == 96


def test_kv_cache_that_cannot_fit_is_one_clear_error_before_any_engine():
    with pytest.raises(ResourceError) as err:
        plan_kv_cache(machine([0.6]), kv_bytes_per_token(SMOLLM2, "float32"), 148, 96, 2048,
                      weights_bytes=WEIGHTS_135M)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("0.09 GiB of KV cache", "0.53 GiB for the weights", "NUMA node 0 has 0.60 GiB available", "max_model_len",
                 "kv_cache_memory_bytes"):
        assert part in msg


def test_cpu_defaults_bind_every_allowed_core_and_merge_adapters():
    d = device_defaults(machine([3], cpus=64, affinity=[4, 5, 6, 7]))
    assert (d.device, d.train_dtype, d.eval_dtype, d.accelerate_profile) == ("cpu", "float32", "float32", "cpu")
    assert d.vllm_enforce_eager and d.vllm_adapter_serving == "merged" and d.vllm_gpu_memory_utilization is None
    assert d.cpu_threads_bind == "4,5,6,7" and d.cpu_threads == 4  # the process's cores, not the machine's 64
    assert d.cpu_ld_preload is None  # this fake system has no tcmalloc
    from dataclasses import replace

    lib = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
    assert device_defaults(replace(machine([3]), tcmalloc=lib)).cpu_ld_preload == lib


def test_gpu_defaults_use_bf16_graphs_lora_and_every_gpu():
    h100 = [Gpu(i, "NVIDIA H100", 80 * GiB, (9, 0)) for i in range(8)]
    d = device_defaults(machine([100], cpus=16, gpus=h100))
    assert (d.device, d.gpu_count, d.train_dtype, d.eval_dtype) == ("cuda", 8, "bfloat16", "bfloat16")
    assert (d.accelerate_profile, d.accelerate_processes) == ("multi_gpu", 8)
    assert not d.vllm_enforce_eager and d.vllm_adapter_serving == "lora" and d.vllm_gpu_memory_utilization == 0.9
    one_old = device_defaults(machine([100], gpus=[Gpu(0, "Tesla V100", 16 * GiB, (7, 0))]))
    assert (one_old.accelerate_profile, one_old.train_dtype, one_old.eval_dtype) == ("single_gpu", "float32", "float16")


def test_tensor_parallel_size_splits_heads_evenly():
    assert tensor_parallel_size(LLAMA_70B, 8) == 8
    assert tensor_parallel_size(LLAMA_70B, 6) == 4
    assert tensor_parallel_size(SMOLLM2, 8) == 3  # 9 heads, 3 KV heads
    assert tensor_parallel_size(SMOLLM2, 0) == 1


def test_read_machine_parses_a_fake_sys_and_proc(tmp_path):
    node = tmp_path / "sys/devices/system/node/node0"
    node.mkdir(parents=True)
    (node / "cpulist").write_text("0-1\n")
    (node / "meminfo").write_text("Node 0 MemTotal:  3145728 kB\nNode 0 MemFree:  1048576 kB\n"
                                  "Node 0 Active(file):  524288 kB\nNode 0 Inactive(file):  0 kB\n"
                                  "Node 0 SReclaimable:  0 kB\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:  24117248 kB\nMemFree: 20000000 kB\nMemAvailable: 23068672 kB\n")
    facts = read_machine(tmp_path / "sys", tmp_path / "proc", probe_gpus=False)
    assert facts.numa_nodes == (NumaNode(0, (0, 1), 3 * GiB, int(1.5 * GiB)),)
    assert (facts.mem_total_bytes, facts.mem_available_bytes) == (23 * GiB, 22 * GiB)
    assert facts.memory_for_process() == (int(1.5 * GiB), "NUMA node 0")


def test_vllm_backend_on_a_small_node0_sizes_its_cache_and_ignores_gpu_memory_utilization(monkeypatch):
    """The failure of the first round: node 0 small, gpu_memory_utilization tiny. The engine args get the
    need-based size; a user's VLLM_CPU_KVCACHE_SPACE still wins."""
    pytest.importorskip("vllm")
    import stegobench.eval.backends.vllm_backend as vb

    small = machine([3])
    monkeypatch.setattr(vb, "read_machine", lambda **_: small)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    backend = vb.VLLMBackend("tiny-llama", vb.VLLMOptions(gpu_memory_utilization=0.02))
    assert "gpu_memory_utilization" not in backend._engine_args and backend._engine_args["enforce_eager"]
    prompts = [[1] * 40] * 96
    args = backend._kv_cache_args(prompts, 48)
    assert args["kv_cache_memory_bytes"] == backend.kv_plan.bytes > 0
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert backend._kv_cache_args(prompts, 48) == {}
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    explicit = vb.VLLMBackend("tiny-llama", vb.VLLMOptions(kv_cache_memory_bytes=123 << 20))
    assert explicit._kv_cache_args(prompts, 48) == {"kv_cache_memory_bytes": 123 << 20}


def test_whitebox_reader_gets_room_beside_vllm_on_a_gpu_or_a_clear_error():
    from stegobench.core.device import GPU_MEMORY_UTILIZATION, vllm_share_beside_reader

    h100 = machine([100], gpus=(Gpu(0, "H100", 80 * GiB, (9, 0)),))
    seven_b = 14 * GiB  # bf16
    share = vllm_share_beside_reader(h100, GPU_MEMORY_UTILIZATION, seven_b)
    assert share == pytest.approx(0.9 - 1.5 * 14 / 80, abs=1e-3)
    with pytest.raises(ResourceError, match="use --backend hf"):
        vllm_share_beside_reader(h100, GPU_MEMORY_UTILIZATION, 140 * GiB)  # 70B in bf16 cannot share one GPU


def test_eval_sets_vllms_share_for_the_whitebox_reader_only_when_the_user_did_not(monkeypatch):
    pytest.importorskip("vllm")
    from stegobench.core.config import load_config
    from stegobench.eval.backends import run_options
    from stegobench.eval.backends.options import HFOptions
    from stegobench.eval.backends import vllm_backend as vb
    from stegobench.eval.config import EvalConfig

    import stegobench.core.models as models_module

    monkeypatch.setattr(vb, "read_machine", lambda: machine([100], gpus=(Gpu(0, "A100", 40 * GiB, (8, 0)),)))
    monkeypatch.setattr(models_module, "weights_bytes_at", lambda folder, dtype: 10 * GiB)  # a 5B model in bf16

    def options(*overrides: str) -> vb.VLLMOptions:
        cfg = load_config(EvalConfig, None, list(overrides))
        return run_options("vllm", cfg.backend_options, "tiny-llama", cfg.whitebox)

    assert options("whitebox=true").gpu_memory_utilization == pytest.approx(0.9 - 1.5 * 10 / 40)
    mine = options("whitebox=true", "backend_options={gpu_memory_utilization: 0.5, max_model_len: 512}")
    assert (mine.gpu_memory_utilization, mine.max_model_len) == (0.5, 512)
    assert options().gpu_memory_utilization is None
    # A backend without its own adjustment: its typed options as configured.
    assert run_options("hf", {"batch_size": 8}, "tiny-llama", True) == HFOptions(batch_size=8)


def test_the_suite_runs_one_worker_per_allowed_cpu_while_memory_holds_them():
    from conftest import SUITE_MAX_WORKERS, suite_workers

    assert suite_workers(machine([23.0]))[0] == 2  # these machines: 2 CPUs, memory for 11
    assert suite_workers(machine([23.0], cpus=8, affinity=[0]))[0] == 1  # a taskset allowing one CPU
    n, why = suite_workers(machine([3.6], total_gib=3.6, cpus=8))  # memory comes online late: 3.6 GiB holds 1
    assert n == 1 and "3.60 GiB available" in why
    assert suite_workers(machine([6.0], total_gib=6.0, cpus=8))[0] == 3
    assert suite_workers(machine([1.0], total_gib=1.0))[0] == 1  # never 0: one worker, as pytest alone
    assert suite_workers(machine([500.0], total_gib=500.0, cpus=64))[0] == SUITE_MAX_WORKERS
