"""Section (g)'s settings, from the environment (kept apart from bench/config.py, which other sections own)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from bench.config import Config


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _ints(name: str, default: str) -> tuple[int, ...]:
    return tuple(int(n) for n in (os.environ.get(name) or default).split(",") if n.strip())


@dataclass(frozen=True)
class Growth:
    rows: int  # the big table, in a database of its own so that the other sections keep their 1M rows
    database_url: str
    node_counts: tuple[int, ...]  # end to end with this many node workers
    e2e_tasks: int
    rounds: int
    fleet_nodes: int  # registered nodes whose heartbeats one process sends
    live_nodes: int  # real run_node processes
    fleet_seconds: int  # each CPU window of the fleet measurement
    sweeps: int  # timed calls of each sweep and of the dashboard
    max_s: int  # cap on any one wait (a round, the start-up of the workers)

    def big(self, cfg: Config) -> Config:
        """The Config for the big table's database."""
        return dataclasses.replace(cfg, database_url=self.database_url, rows=self.rows)


def load(cfg: Config) -> Growth:
    parts = urlsplit(cfg.database_url)
    default_db = urlunsplit(parts._replace(path=f"/{cfg.database_name}_growth"))
    return Growth(
        rows=_int("BENCH_GROWTH_ROWS", 10_000_000),
        database_url=os.environ.get("BENCH_GROWTH_DATABASE_URL") or default_db,
        node_counts=_ints("BENCH_GROWTH_NODE_COUNTS", "1,3,10"),
        e2e_tasks=_int("BENCH_GROWTH_E2E_TASKS", cfg.e2e_tasks),
        rounds=_int("BENCH_GROWTH_ROUNDS", cfg.rounds),
        fleet_nodes=_int("BENCH_GROWTH_FLEET_NODES", 1000),
        live_nodes=_int("BENCH_GROWTH_LIVE_NODES", 50),
        fleet_seconds=_int("BENCH_GROWTH_FLEET_SECONDS", 30),
        sweeps=_int("BENCH_GROWTH_SWEEPS", 20),
        max_s=_int("BENCH_GROWTH_MAX_SECONDS", 300),
    )
