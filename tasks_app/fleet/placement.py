"""Where an executed task runs (docs/task-types.md, "Placement").

The candidates are the node its request names, else its type's participants. A candidate may take the
task when it is schedulable (not cordoned or draining), has every label the task's constraints ask for,
and has free capacity for every resource they ask for (capacity less what the node's unfinished tasks
reserve). Among those: the node of the earlier tasks of its ordering key, else the type's rule
(TASKHUB_ASSIGNMENT): `balanced` (the default) takes the least-loaded one, `first` the first one. When no
candidate may take it, the task is unschedulable: it is stored failed at once, with a message that
names each candidate and what it lacks, rather than waiting for a node that will never come.

The choice is recorded on the task (GlobalTask.placement), with the candidates and their load or why
they were passed over, for operators (`taskhub task show`, the admin).

Capacity is reserved by the task itself: a node's reserved capacity is the sum of what its unfinished
tasks asked for, so it is taken when a task is assigned and given back when the task ends, moves or is
deleted, with nothing to keep in step. Creates that ask for capacity lock the node rows (in name order,
so they cannot deadlock) for their transaction: two of them never both see the same free capacity.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from tasks_app.errors import InvalidInput
from tasks_app.fleet.models import Node
from tasks_app.fleet.selectors import node_last_assigned, node_reserved, node_unfinished_counts, online_cutoff
from tasks_app.tasks.models import GlobalTask, now_ts

LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")
RESOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_AMOUNT = 2**53  # exact in every JSON reader
MAX_ENTRIES = 32
RULES = ("balanced", "first", "explicit")
_ALIASES = {"least_loaded": "balanced"}


# OpenAPI 3.0 has no propertyNames: the names' rule is in the description (and checked by parse_*).
_LABELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_ENTRIES,
    "description": f"label names match {LABEL_KEY_RE.pattern}",
    "additionalProperties": {"type": "string", "pattern": LABEL_VALUE_RE.pattern},
}


def capacity_schema(minimum: int) -> dict[str, Any]:
    return {
        "type": "object",
        "maxProperties": MAX_ENTRIES,
        "description": f"resource names match {RESOURCE_RE.pattern}",
        "additionalProperties": {"type": "integer", "minimum": minimum, "maximum": MAX_AMOUNT},
    }


# OpenAPI: what the API takes (tasks_app/api/serializers.py, cluster_serializers.py).
LABELS_SCHEMA = _LABELS_SCHEMA
CONSTRAINTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"labels": _LABELS_SCHEMA, "capacity": capacity_schema(1)},
}
PLACEMENT_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}


def rule_for(task_type: str) -> str:
    """The type's rule (TASKHUB_ASSIGNMENT), `balanced` unless set."""
    rule = str(settings.TASKHUB_ASSIGNMENT.get(task_type, "balanced"))
    return _ALIASES.get(rule, rule)


# --- what nodes offer and tasks ask for ----------------------------------------------------------


def parse_labels(raw: Any, field_name: str) -> dict[str, str]:
    """Labels as given by an operator or a task's constraints; InvalidInput naming the field."""
    if not isinstance(raw, dict):
        raise InvalidInput(f'{field_name}: must be an object of label names to values, like {{"disk": "ssd"}}')
    if len(raw) > MAX_ENTRIES:
        raise InvalidInput(f"{field_name}: at most {MAX_ENTRIES} labels")
    for key, value in raw.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise InvalidInput(f"{field_name}: {key!r} is not a label name (1-63 letters, digits, '_', '.', '/', '-')")
        if not isinstance(value, str) or not LABEL_VALUE_RE.fullmatch(value):
            raise InvalidInput(f"{field_name}.{key}: must be a string of up to 63 letters, digits, '_', '.' or '-'")
    return dict(raw)


def parse_capacity(raw: Any, field_name: str, *, positive: bool = False) -> dict[str, int]:
    """Amounts per resource ({"slots": 4}); InvalidInput naming the field. A task's need must be at
    least 1 (`positive`); a node may offer 0."""
    if not isinstance(raw, dict):
        raise InvalidInput(f'{field_name}: must be an object of resource names to whole numbers, like {{"slots": 2}}')
    if len(raw) > MAX_ENTRIES:
        raise InvalidInput(f"{field_name}: at most {MAX_ENTRIES} resources")
    low = 1 if positive else 0
    for key, value in raw.items():
        if not RESOURCE_RE.fullmatch(key):
            raise InvalidInput(
                f"{field_name}: {key!r} is not a resource name (a lowercase letter, then up to 31 of a-z, 0-9, '_')"
            )
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_AMOUNT:
            raise InvalidInput(f"{field_name}.{key}: must be a whole number from {low} to {MAX_AMOUNT}")
    return dict(raw)


def parse_constraints(raw: Any) -> dict[str, Any]:
    """A create's `constraints`: {"labels": {...}, "capacity": {...}}, both optional. Returns the stored
    form, empty parts left out (so that {} means none)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput('constraints: must be an object like {"labels": {"disk": "ssd"}, "capacity": {"slots": 1}}')
    unknown = sorted(set(raw) - {"labels", "capacity"})
    if unknown:
        raise InvalidInput(f"constraints: unknown field(s) {', '.join(map(repr, unknown))}; use labels and capacity")
    out: dict[str, Any] = {}
    labels = parse_labels(raw.get("labels", {}), "constraints.labels")
    need = parse_capacity(raw.get("capacity", {}), "constraints.capacity", positive=True)
    if labels:
        out["labels"] = labels
    if need:
        out["capacity"] = need
    return out


def capacity_of(capacity: Mapping[str, int] | None, capacity_blocks: int) -> dict[str, int]:
    """What a node offers per resource: its declared capacity; "blocks", unless declared, is what its
    worker reports of its block ledger (0: none)."""
    out = dict(capacity or {})
    if "blocks" not in out and capacity_blocks:
        out["blocks"] = capacity_blocks
    return out


def reserved_by(constraints: Any) -> dict[str, int]:
    """What a task reserves on its node while unfinished."""
    need = constraints.get("capacity") if isinstance(constraints, dict) else None
    return {k: v for k, v in need.items() if isinstance(v, int)} if isinstance(need, dict) else {}


# --- the placement of one request's tasks --------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    name: str
    transport: str
    scheduling: str
    online: bool
    labels: dict[str, str]
    capacity: dict[str, int]


@dataclass(frozen=True)
class Choice:
    node: str  # "" when unschedulable
    record: dict[str, Any]  # GlobalTask.placement
    unschedulable: str = ""  # why no candidate may take it


class Placement:
    """What placing reads from the database, remembered across the tasks of one request (a bulk create
    asks once, not once per task), with what the request's own earlier tasks took, as if each had
    committed: the node each ordering key's latest task went to, the tasks and capacity each node got."""

    def __init__(self, key_nodes: Mapping[str, str] | None = None) -> None:
        self._nodes: dict[str, NodeInfo | None] = {}  # None: not registered
        # key_nodes: ordering keys already placed by the caller (a drain's earlier moves).
        self._key_nodes: dict[str, str] = dict(key_nodes or {})
        self.assigned: Counter[str] = Counter()
        # Read once per node and request; the request's own placements are added as they are made.
        self._reserved: dict[str, Counter[str]] = {}
        self._unfinished: dict[str, int] = {}
        self._stored_last: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._locked = False
        self._placed_need: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def nodes(self, names: Iterable[str]) -> dict[str, NodeInfo | None]:
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self._nodes]
        if unknown:
            cutoff = online_cutoff()
            rows = Node.objects.filter(name__in=unknown).values_list(
                "name", "transport", "scheduling", "last_heartbeat", "labels", "capacity", "capacity_blocks"
            )
            found = {
                name: NodeInfo(
                    name,
                    transport,
                    scheduling,
                    beat is not None and beat >= cutoff,
                    labels if isinstance(labels, dict) else {},
                    capacity_of(capacity if isinstance(capacity, dict) else {}, blocks),
                )
                for name, transport, scheduling, beat, labels, capacity, blocks in rows
            }
            self._nodes.update((n, found.get(n)) for n in unknown)
        return {n: self._nodes[n] for n in wanted}

    def key_node(self, key: str) -> str:
        """The node of the latest task of this ordering key ("" if none)."""
        if key not in self._key_nodes:
            earlier = GlobalTask.objects.filter(order_key=key).exclude(node="").order_by("-created_ns")
            self._key_nodes[key] = str(earlier.values_list("node", flat=True).first() or "")
        return self._key_nodes[key]

    def lock(self) -> None:
        """Hold every node row until the transaction ends (in name order: no two lockers deadlock), so
        that capacity read now stays free until this transaction's tasks are in the table."""
        if not self._locked:
            list(Node.objects.select_for_update().order_by("name").values_list("pk", flat=True))
            self._locked = True
            # Read again under the lock: what was read before it may have changed (a cordon, a capacity, a
            # reservation). What this request placed itself is kept.
            self._nodes.clear()
            self._reserved.clear()
            self._unfinished.clear()

    def reserved(self, names: list[str]) -> dict[str, Counter[str]]:
        """Capacity reserved on each node: its unfinished tasks' (stored) and this request's."""
        unknown = [n for n in names if n not in self._reserved]
        if unknown:
            stored = node_reserved(unknown)
            for n in unknown:
                self._reserved[n] = Counter(stored[n]) + self._placed_need[n]
        return {n: self._reserved[n] for n in names}

    def placed(self, key: str, node: str, need: Mapping[str, int]) -> None:
        if key:
            self._key_nodes[key] = node
        self.assigned[node] += 1
        self._last[node] = time.time_ns()
        if need:
            self._placed_need[node].update(need)
            if node in self._reserved:
                self._reserved[node].update(need)

    def last_assigned(self, names: list[str]) -> dict[str, int]:
        unknown = [n for n in names if n not in self._stored_last]
        if unknown:
            self._stored_last.update(node_last_assigned(unknown))
        return {n: self._last.get(n, self._stored_last[n]) for n in names}

    def unfinished(self, names: list[str]) -> dict[str, int]:
        unknown = [n for n in names if n not in self._unfinished]
        if unknown:
            self._unfinished.update(node_unfinished_counts(unknown))
        return {n: self._unfinished[n] + self.assigned[n] for n in names}


def unfit(info: NodeInfo, constraints: Mapping[str, Any], reserved: Mapping[str, int] | None) -> str:
    """Why this node may not take a task with these constraints ("" if it may)."""
    if info.scheduling != Node.Scheduling.SCHEDULABLE:
        return str(info.scheduling)
    for key, want in (constraints.get("labels") or {}).items():
        has = info.labels.get(key)
        if has is None:
            return f"no label {key}"
        if has != want:
            return f"label {key}={has}, not {want}"
    for resource, need in reserved_by(constraints).items():
        offered = info.capacity.get(resource)
        if offered is None:
            return f"no {resource} capacity"
        free = offered - (reserved or {}).get(resource, 0)
        if free < need:
            return f"{resource}: needs {need}, {max(free, 0)} of {offered} free"
    return ""


def choose(
    *,
    task_type: str,
    candidates: list[str],
    constraints: Mapping[str, Any],
    placement: Placement,
    explicit: bool = False,
    key: str = "",
    rule: str | None = None,
) -> Choice:
    """Pick the node among the candidates (registered nodes) for a task with these constraints, and
    note it in `placement` (its load and reservation count for the request's later tasks)."""
    need = reserved_by(constraints)
    if need:
        placement.lock()  # before reading the nodes: their state and capacity as they are under the lock
    infos = placement.nodes(candidates)
    reserved = placement.reserved(candidates) if need else {}
    passed: dict[str, str] = {}
    for name in candidates:
        info = infos[name]
        why = "not registered" if info is None else unfit(info, constraints, reserved[name] if need else None)
        if why:
            passed[name] = why
    eligible = [n for n in candidates if n not in passed]
    rule = "explicit" if explicit else (rule or rule_for(task_type))
    record: dict[str, Any] = {"rule": rule, "at": now_ts()}
    if key:
        record["order_key"] = key
    if not eligible:
        record["candidates"] = [{"node": n, "passed_over": passed[n]} for n in candidates]
        if explicit or len(candidates) == 1:
            what = f"{'the node it names' if explicit else 'its only candidate'} cannot take it"
        else:
            what = "no candidate can take it"
        detail = "; ".join(f"{n}: {passed[n]}" for n in candidates)
        return Choice("", {**record, "outcome": "unschedulable"}, f"unschedulable: {what} ({detail})")
    following = placement.key_node(key) if key and not explicit else ""
    if following and following in eligible:
        chosen, record["rule"] = following, "order_key"
        record["candidates"] = [{"node": n, "passed_over": passed[n]} for n in candidates if n in passed]
    elif rule in ("first", "explicit") or len(eligible) == 1:
        chosen = eligible[0]
        record["candidates"] = [{"node": n, **({"passed_over": passed[n]} if n in passed else {})} for n in candidates]
    else:
        chosen, record["candidates"] = _least_loaded(candidates, eligible, passed, infos, need, placement)
    if following and following != chosen:
        record["order_key_node"] = {"node": following, "passed_over": passed.get(following, "not a candidate")}
    record["node"] = chosen
    placement.placed(key, chosen, need)
    return Choice(chosen, record)


def _least_loaded(
    candidates: list[str],
    eligible: list[str],
    passed: Mapping[str, str],
    infos: Mapping[str, NodeInfo | None],
    need: Mapping[str, int],
    placement: Placement,
) -> tuple[str, list[dict[str, Any]]]:
    """The balanced rule: online before offline, then fewest unfinished tasks, then the most free capacity
    (of the scarcest resource the task needs, as a share of the node's), then the node given a task least
    recently, then the candidates' order. Returns the node and every candidate's figures."""
    unfinished = placement.unfinished(eligible)
    last = placement.last_assigned(eligible)
    reserved = placement.reserved(eligible) if need else {}
    free_share: dict[str, float] = {}
    for n in eligible:
        info = infos[n]
        assert info is not None
        shares = [(info.capacity[r] - reserved[n].get(r, 0)) / info.capacity[r] for r in need if info.capacity.get(r)]
        free_share[n] = min(shares) if shares else 1.0

    def score(n: str) -> tuple[bool, int, float, int, int]:
        info = infos[n]
        return (not (info and info.online), unfinished[n], -free_share[n], last[n], candidates.index(n))

    chosen = min(eligible, key=score)
    figures: list[dict[str, Any]] = []
    for n in candidates:
        if n in passed:
            figures.append({"node": n, "passed_over": passed[n]})
            continue
        info = infos[n]
        entry: dict[str, Any] = {"node": n, "online": bool(info and info.online), "unfinished": unfinished[n]}
        if need:
            entry["free_share"] = round(free_share[n], 4)
        figures.append(entry)
    return chosen, figures
