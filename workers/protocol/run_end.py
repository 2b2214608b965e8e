"""Why a run must stop, as the server said: a key per run id in Redis, with a time to live.

The server sets "cancel" when a task is cancelled and "void" when it ended the run itself (a retry or
the dead-node sweep replaced it). A node reads the marker before it starts a run, at each of the
handler's safe points, and before each report, so a run the server has given up never reports on a
newer one. Keyed by run id, never by task_id: a task created again under an old id starts clean.
"""

from __future__ import annotations

from enum import Enum

from workers.protocol import keys
from workers.protocol.connection import client


class End(str, Enum):
    CANCEL = "cancel"
    VOID = "void"


def mark(run_id: str, why: End) -> None:
    """Set by the server; a cancel never overwrites a void (nothing may report on a voided run)."""
    key = keys.run_end_key(run_id)
    ttl = keys.run_state_ttl()
    if why is End.VOID:
        client().set(key, why.value, ex=ttl)
    else:
        client().set(key, why.value, ex=ttl, nx=True)


def end_of(run_id: str) -> End | None:
    """Whether (and why) the server ended this run: one read."""
    return _parse(client().get(keys.run_end_key(run_id)))


def ends_of(run_ids: list[str]) -> dict[str, End | None]:
    """end_of for several runs, in one read."""
    if not run_ids:
        return {}
    unique = list(dict.fromkeys(run_ids))
    raws: list[object] = client().mget([keys.run_end_key(r) for r in unique])  # type: ignore[assignment]
    return {run_id: _parse(raw) for run_id, raw in zip(unique, raws, strict=True)}


def _parse(raw: object) -> End | None:
    if raw is None:
        return None
    value = raw.decode() if isinstance(raw, bytes) else str(raw)
    return End(value) if value in End._value2member_map_ else None
