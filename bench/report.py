"""The one table `make bench` prints, and the machine line above it."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from importlib.metadata import version

from rich.console import Console
from rich.table import Table


@dataclass
class Row:
    section: str
    measurement: str
    result: str
    detail: str = ""
    target: str = ""
    met: bool | None = None


def machine(pg_version: str, redis_version: str, wrk: str | None, workers: int, http: bool = True) -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    wrk_version = "python client (no wrk)"
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).split("Copyright")[0].strip()
    web = f", gunicorn {version('gunicorn')} ({workers} sync workers)" if http else ""
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, Django {version('django')}{web}, psycopg {version('psycopg')}, "
        f"Celery {version('celery')}; PostgreSQL {pg_version}; Redis {redis_version}"
        + (f"; load: {wrk_version}" if http else "")
    )


def render(rows: list[Row], title: str, caption: str) -> None:
    table = Table(title=title, caption=caption, caption_justify="left", show_lines=False)
    for name, kw in (
        ("", {"style": "bold"}),
        ("measurement", {}),
        ("result", {"justify": "right"}),
        ("detail", {}),
        ("target", {}),
        ("met", {"justify": "center"}),
    ):
        table.add_column(name, **kw)  # type: ignore[arg-type]
    last = None
    for r in rows:
        if last is not None and r.section != last:
            table.add_section()
        met = "" if r.met is None else ("yes" if r.met else "NO")
        table.add_row(r.section if r.section != last else "", r.measurement, r.result, r.detail, r.target, met)
        last = r.section
    Console(width=int(os.environ.get("BENCH_WIDTH", "170"))).print(table)
