"""Enforcing a service's CPU and memory limits with what the OS offers.

Three mechanisms, chosen once at start-up (:func:`detect_limiter`):

- ``cgroup2``: a cgroup per service under the platform's own (delegated) cgroup; ``memory.max``
  = memory limit, ``cpu.max`` = CPU limit, ``cpu.weight`` from the CPU request. The whole process
  tree is limited and accounted together, and stopping kills every process in the cgroup.
- ``cgroup1``: the same with the v1 ``memory`` and ``cpu`` controllers (``memory.limit_in_bytes``,
  ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, ``cpu.shares``).
- ``rlimit``: no writable cgroup (not root, or no controllers): ``RLIMIT_AS`` = memory limit on
  each process (it bounds address space, not resident memory, and applies per process), and the
  CPU limit rounded up to whole cores with ``sched_setaffinity``. Requests are not enforced.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from datalab.resources import Resources

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Confinement:
    """What the launcher applies to a service process before it ``exec``s."""

    cgroup_procs: tuple[str, ...] = ()  # cgroup.procs files to join
    rlimit_as: int | None = None
    cpus: tuple[int, ...] = ()  # CPU affinity; empty: all


class Limiter:
    """Base: the rlimit/affinity fallback, which needs no setup and no cleanup."""

    name = "rlimit"

    def describe(self) -> str:
        return "rlimit: memory limit as RLIMIT_AS per process, CPU limit as CPU affinity"

    def prepare(self, service_id: str, resources: Resources) -> Confinement:
        cpus: tuple[int, ...] = ()
        if resources.cpu_limit is not None:
            available = sorted(os.sched_getaffinity(0))
            count = min(len(available), max(1, math.ceil(resources.cpu_limit)))
            cpus = tuple(available[:count])
        return Confinement(rlimit_as=resources.memory_limit, cpus=cpus)

    def pids(self, service_id: str) -> set[int]:
        """Every process in the service's cgroup (none known without cgroups)."""
        return set()

    def cleanup(self, service_id: str) -> None:
        """Remove what :meth:`prepare` created; the service's processes must be gone."""


class CgroupV1Limiter(Limiter):
    name = "cgroup1"

    def __init__(self, memory_base: Path, cpu_base: Path) -> None:
        self.memory_base = memory_base
        self.cpu_base = cpu_base

    def describe(self) -> str:
        return (
            f"cgroup v1: memory.limit_in_bytes under {self.memory_base}, "
            f"cpu.cfs_quota_us and cpu.shares under {self.cpu_base}"
        )

    def prepare(self, service_id: str, resources: Resources) -> Confinement:
        memory = self.memory_base / service_id
        cpu = self.cpu_base / service_id
        memory.mkdir(parents=True, exist_ok=True)
        cpu.mkdir(parents=True, exist_ok=True)
        _write(memory / "memory.limit_in_bytes", str(resources.memory_limit or -1))
        if resources.cpu_limit is not None:
            _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(int(resources.cpu_limit * CFS_PERIOD_US)))
        else:
            _write(cpu / "cpu.cfs_quota_us", "-1")
        shares = int((resources.cpu_request or 1.0) * 1024)
        _write(cpu / "cpu.shares", str(max(2, shares)))
        return Confinement(cgroup_procs=(str(memory / "cgroup.procs"), str(cpu / "cgroup.procs")))

    def pids(self, service_id: str) -> set[int]:
        return _read_pids(self.memory_base / service_id) | _read_pids(self.cpu_base / service_id)

    def cleanup(self, service_id: str) -> None:
        for path in (self.memory_base / service_id, self.cpu_base / service_id):
            with contextlib.suppress(OSError):
                path.rmdir()


class CgroupV2Limiter(Limiter):
    name = "cgroup2"

    def __init__(self, base: Path) -> None:
        self.base = base

    def describe(self) -> str:
        return f"cgroup v2: memory.max, cpu.max and cpu.weight under {self.base}"

    def prepare(self, service_id: str, resources: Resources) -> Confinement:
        group = self.base / service_id
        group.mkdir(parents=True, exist_ok=True)
        _write(group / "memory.max", str(resources.memory_limit or "max"))
        quota = "max" if resources.cpu_limit is None else str(int(resources.cpu_limit * 100_000))
        _write(group / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        # cpu.weight 100 is one core's worth, as cpu.shares 1024 in v1
        weight = round((resources.cpu_request or 1.0) * 100)
        _write(group / "cpu.weight", str(min(10_000, max(1, weight))))
        return Confinement(cgroup_procs=(str(group / "cgroup.procs"),))

    def pids(self, service_id: str) -> set[int]:
        return _read_pids(self.base / service_id)

    def cleanup(self, service_id: str) -> None:
        with contextlib.suppress(OSError):
            (self.base / service_id).rmdir()


def detect_limiter(root: Path = CGROUP_ROOT) -> Limiter:
    """The best mechanism usable here; probes by creating (and removing) a test cgroup."""
    if os.geteuid() != 0:
        return Limiter()
    own = _own_cgroups()
    v2 = _try_v2(root, own.get(""))
    if v2 is not None:
        return v2
    memory, cpu = root / "memory", root / "cpu"
    if "memory" in own and "cpu" in own and memory.is_dir() and cpu.is_dir():
        limiter = CgroupV1Limiter(
            memory / own["memory"].lstrip("/") / "datalab",
            cpu / own["cpu"].lstrip("/") / "datalab",
        )
        try:
            limiter.prepare(".probe", Resources(memory_limit=2**30, cpu_limit=1.0))
            limiter.cleanup(".probe")
            return limiter
        except OSError as exc:
            log.info("cgroup v1 not usable (%s); falling back to rlimits", exc)
    return Limiter()


def _try_v2(root: Path, own: str | None) -> CgroupV2Limiter | None:
    """v2 needs the memory and cpu controllers delegated to a child of our cgroup. Processes may
    not live in an inner node, so this works when the platform runs in a delegated cgroup whose
    subtree we may configure (e.g. systemd ``Delegate=yes``)."""
    if own is None or not (root / "cgroup.controllers").is_file():
        return None
    mine = root / own.lstrip("/")
    base = mine / "datalab"
    try:
        available = (mine / "cgroup.controllers").read_text().split()
        if not {"memory", "cpu"} <= set(available):
            return None
        base.mkdir(exist_ok=True)
        _write(base / "cgroup.subtree_control", "+memory +cpu")
        limiter = CgroupV2Limiter(base)
        limiter.prepare(".probe", Resources(memory_limit=2**30, cpu_limit=1.0))
        limiter.cleanup(".probe")
        return limiter
    except OSError as exc:
        log.info("cgroup v2 not usable at %s (%s)", base, exc)
        return None


def _own_cgroups() -> dict[str, str]:
    """Controller -> path of this process's cgroup ("" is the v2 unified hierarchy)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                out[controller] = path
    return out


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read_pids(group: Path) -> set[int]:
    try:
        return {int(p) for p in (group / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()
