"""CPU seconds and memory of a process and everything it forked, read from /proc.

A Celery prefork worker does its work in children the parent forked, so a worker's cost is its
whole tree: the parent, its live descendants, and the children it has already reaped (their
CPU sits in the parent's cutime/cstime).
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu(pid: int) -> float | None:
    """utime + stime of one process, all its threads, in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int) -> list[int]:
    """The live direct children of pid (a scan of /proc: /proc/<pid>/task/*/children is optional in kernels)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                out.append(int(entry))
    return sorted(out)


def tree(pid: int) -> list[int]:
    """pid and its live descendants, parent first."""
    pids, i = [pid], 0
    while i < len(pids):
        pids += children(pids[i])
        i += 1
    return pids


def tree_cpu(pid: int) -> float:
    """CPU seconds of pid, its live descendants and the children each has reaped."""
    total = 0.0
    for p in tree(pid):
        fields = _stat_fields(p)
        if fields is not None:
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICK
    return total


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_kb(pid: int) -> list[int]:
    """VmHWM (the peak resident set) of pid and each live descendant, parent first, in kB."""
    return [kb for p in tree(pid) if (kb := _status_kb(p, "VmHWM")) is not None]


def rss_kb(pid: int) -> int:
    """VmRSS now, summed over pid and its live descendants, in kB."""
    return sum(kb for p in tree(pid) if (kb := _status_kb(p, "VmRSS")) is not None)


def mb_text(kbs: list[int]) -> str:
    """'61 MB' for one process; '31 MB + children 29, 29 MB' for a parent and its children."""
    if not kbs:
        return "?"
    head = f"{kbs[0] / 1024:.0f} MB"
    if len(kbs) == 1:
        return head
    return head + " + children " + ", ".join(f"{kb / 1024:.0f}" for kb in kbs[1:]) + " MB"
