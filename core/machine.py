"""What the machine reports about itself: CPUs and affinity, NUMA nodes and their memory, RAM, GPUs.

    stegobench env                 # prints these facts and the defaults a run would take from them

Every number is read when asked, never cached: on the VMs this project runs on, memory comes online while
they run (NUMA node 0 read 3.6 GiB at boot and 8 GiB minutes later, out of 23 GiB), so a figure read at
import time can be wrong by the time an engine starts. Tests build `MachineFacts` by hand (a small node 0,
many cores, GPUs) or point `read_machine` at a fake /sys and /proc.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GiB = 1 << 30


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: tuple[int, ...]
    total_bytes: int
    # Counted as vLLM's CPU worker counts it (free + file pages + reclaimable slab): its KV-cache check uses this.
    available_bytes: int


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_bytes: int
    compute_capability: tuple[int, int] = (0, 0)

    @property
    def supports_bf16(self) -> bool:
        return self.compute_capability >= (8, 0)  # Ampere and newer


@dataclass(frozen=True)
class MachineFacts:
    cpu_count: int
    affinity: tuple[int, ...]  # the CPUs this process may run on (a container or taskset may allow fewer)
    numa_nodes: tuple[NumaNode, ...]
    mem_total_bytes: int
    mem_available_bytes: int
    gpus: tuple[Gpu, ...] = ()
    notes: tuple[str, ...] = field(default=())  # what could not be read, and why
    tcmalloc: str | None = None  # path of libtcmalloc_minimal, if the system has it (Debian: libtcmalloc-minimal4)

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def memory_node(self) -> NumaNode | None:
        """The node this process's memory is bound to by vLLM's CPU worker: the node of its first allowed CPU."""
        if not self.numa_nodes:
            return None
        first = min(self.affinity) if self.affinity else 0
        return next((n for n in self.numa_nodes if first in n.cpus), self.numa_nodes[0])

    def memory_for_process(self) -> tuple[int, str]:
        """(bytes available, where): the memory node's available bytes, never more than the whole machine's."""
        node = self.memory_node()
        if node is None:
            return self.mem_available_bytes, "RAM"
        return min(node.available_bytes, self.mem_available_bytes), f"NUMA node {node.id}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["device"] = self.device
        return d


def _parse_cpulist(text: str) -> tuple[int, ...]:
    """'0-3,8,10-11' -> (0, 1, 2, 3, 8, 10, 11)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus += range(int(lo), int(hi or lo) + 1)
    return tuple(cpus)


def _meminfo(path: Path) -> dict[str, int]:
    """/proc/meminfo ('MemTotal: 123 kB') or a node's meminfo ('Node 0 MemTotal: 123 kB') -> bytes by key."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"(?:Node \d+ )?([\w()]+):\s+(\d+)(?: kB)?", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * (1024 if line.rstrip().endswith("kB") else 1)
    return out


def _read_numa(sys_root: Path) -> tuple[NumaNode, ...]:
    nodes = []
    base = sys_root / "devices/system/node"
    for d in sorted(base.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        info = _meminfo(d / "meminfo")
        available = sum(info.get(k, 0) for k in ("MemFree", "Active(file)", "Inactive(file)", "SReclaimable"))
        cpulist = (d / "cpulist").read_text() if (d / "cpulist").exists() else ""
        nodes.append(NumaNode(int(d.name[4:]), _parse_cpulist(cpulist), info.get("MemTotal", 0), available))
    return tuple(nodes)


def _read_gpus() -> tuple[tuple[Gpu, ...], list[str]]:
    try:
        import torch
    except ImportError:
        return (), ["torch is not installed: no GPU probe"]
    if not torch.cuda.is_available():
        return (), []
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(Gpu(i, p.name, int(p.total_memory), (int(p.major), int(p.minor))))
    return tuple(gpus), []


def read_machine(sys_root: str | Path = "/sys", proc_root: str | Path = "/proc", probe_gpus: bool = True) -> MachineFacts:
    """The facts as the machine reports them now."""
    notes: list[str] = []
    sys_root, proc_root = Path(sys_root), Path(proc_root)
    try:
        affinity = tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        affinity = tuple(range(os.cpu_count() or 1))
    try:
        numa = _read_numa(sys_root)
    except OSError as exc:
        numa = ()
        notes.append(f"NUMA nodes unreadable: {exc}")
    try:
        info = _meminfo(proc_root / "meminfo")
        total, available = info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, KeyError) as exc:
        total = available = 0
        notes.append(f"{proc_root / 'meminfo'} unreadable: {exc}")
    gpus: tuple[Gpu, ...] = ()
    if probe_gpus:
        gpus, more = _read_gpus()
        notes += more
    return MachineFacts(os.cpu_count() or len(affinity), affinity, numa, total, available, gpus, tuple(notes),
                        find_tcmalloc())


TCMALLOC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_tcmalloc(dirs: tuple[str, ...] = TCMALLOC_DIRS) -> str | None:
    for d in dirs:
        for name in ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"):
            if (Path(d) / name).exists():
                return str(Path(d) / name)
    return None


def gib(n: int | float) -> str:
    return f"{n / GiB:.2f} GiB"
