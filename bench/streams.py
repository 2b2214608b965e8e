"""(s) Event streams (issue 12): GET /tasks p50/p99 with 100 open GET /api/v1/events/ clients, against none.

The web server is the production one, as shipped: `gunicorn taskhub.wsgi:application` reading gunicorn.conf.py
(gthread, GUNICORN_THREADS + TASKHUB_EVENT_STREAMS threads per process), cfg.workers processes
(WEB_CONCURRENCY, 2 by default), on 127.0.0.1, against the bench's database with whatever rows it holds
(section c's 1M when c or g ran or loaded them before). The latency client makes section c's request,
as bench/list_latency.over_http does: sequential GET /tasks?task_type=X&task_status=Y, each on a new connection,
anonymous from 127.0.0.1 as c does, BENCH_STREAM_REQUESTS per condition (default 2,000) after a warm-up. It
runs in this process; the stream clients and the event creator run in child processes of their own, so their
work never takes this process's GIL while it times a request.

Three conditions on the same server, in cfg.rounds interleaved rounds (BENCH_ROUNDS, default 3; the order
rotated each round, as in section a), each round 1/rounds of the requests; p50/p99 pool every round's:
- idle: nothing else (after the first streams round, each process's event hub thread polls on: as in
  production once a stream has been opened);
- events only: a creator POSTs BENCH_STREAM_RATE tracked tasks/s (default 20) to /api/v1/tasks/ with an
  operator's token, no stream open (what the creates themselves cost the server);
- streams: the same creator, and BENCH_STREAM_CLIENTS clients (default 100) each holding
  GET /api/v1/events/ open (asyncio, one child process). A client counts as connected once it has read the
  stream's first line (`retry:`); one answered 429 (its process's TASKHUB_EVENT_STREAMS slots are full: the
  two processes accept unevenly) waits RETRY_429_S and tries again, and the 429s are reported.

Afterwards every client must have received the `created` event of every task whose POST began after the
last client connected (checked by task_id, waiting up to VERIFY_S for the tail). The target, issue 12:
p99 with the streams at most 2x the idle p99. Web CPU is the server's process tree's CPU seconds over the
measurement's wall time (cores); RSS is the tree's largest resident set after a round. The operator, its token and
every task the creator made (with their history) are removed afterwards; the server is stopped.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from typing import Any
from urllib.parse import urlencode

import psycopg

from bench import list_latency, proc_stats, procs
from bench.config import BULK_TYPE_PREFIX, PYTHON, STATUSES, Config, child_env, setup_django
from bench.db import connect
from bench.report import Row

SECTION = "s"
TASK_TYPE = "bench_stream"  # the creator's tracked tasks; not bulk_type_*, so db.remove_scratch takes them too
ID_PREFIX = "bench-stream-"
OPERATOR = "bench-streams-operator"
EVENTS_PATH = "/api/v1/events/"
CREATE_PATH = "/api/v1/tasks/"
RETRY_429_S = 0.2
CONNECT_S = 120.0  # every client connected within this, or the section fails
VERIFY_S = 15.0
STREAM_SECONDS = 1800  # ?timeout= asked for; the server caps it at TASKHUB_EVENTS_MAX_SECONDS (reported)


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


# --- the server ------------------------------------------------------------------------------------


class ProdServer(procs.Server):
    """gunicorn with the shipped gunicorn.conf.py (gthread, its thread count), unlike procs.Server's sync workers."""

    def __init__(self, cfg: Config) -> None:  # procs.Server's own __init__ pins sync workers: not called
        self.name = "taskhub-streams"
        self.port = procs.free_port()
        self.host = "127.0.0.1"
        # BENCH_STREAM_SETTINGS: another settings module for the server (to try a change against the same load).
        env = child_env(cfg, os.environ.get("BENCH_STREAM_SETTINGS") or "taskhub.settings")
        env["WEB_CONCURRENCY"] = str(cfg.workers)
        env["GUNICORN_BIND"] = f"{self.host}:{self.port}"
        # gunicorn reads ./gunicorn.conf.py (cwd is the repository) by itself; nothing here overrides it.
        argv = [PYTHON, "-m", "gunicorn", "taskhub.wsgi:application"]
        self.proc, self.log = procs.spawn("gunicorn-streams", argv, env)
        self._wait_ready("/healthz")


# --- the event creator (child process) -------------------------------------------------------------


def _creator(host: str, port: int, token: str, rate: float, stop: MpEvent, out: Connection) -> None:
    """POST one tracked task every 1/rate s until `stop`; sends back [(monotonic start, task_id)], errors."""
    made: list[tuple[float, str]] = []
    errors = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    headers = {"Content-Type": "application/json", "Authorization": f"Token {token}"}
    while not stop.is_set():
        task_id = f"{ID_PREFIX}{uuid.uuid4()}"
        body = json.dumps({"task_id": task_id, "task_type": TASK_TYPE, "task_data": {"n": len(made)}})
        started = time.monotonic()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("POST", CREATE_PATH, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 201:
                made.append((started, task_id))
            else:
                errors += 1
        except OSError:
            errors += 1
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))  # a steady rate, not one after another
    out.send((made, errors))
    out.close()


class Creator:
    def __init__(self, server: procs.Server, token: str, rate: float) -> None:
        ctx = multiprocessing.get_context("spawn")  # no copy of this process's Django and its connections
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_creator, args=(server.host, server.port, token, rate, self._stop, send), daemon=True
        )
        self.proc.start()
        send.close()

    def finish(self) -> tuple[list[tuple[float, str]], int]:
        self._stop.set()
        made, errors = self._recv.recv() if self._recv.poll(30) else ([], -1)
        self.proc.join(10)
        return made, errors

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# --- the stream clients (child process) ------------------------------------------------------------


class _Client:
    def __init__(self) -> None:
        self.refused = 0  # 429s
        self.unavailable = 0  # 503s: the database refused the request's connection
        self.connected_at = 0.0
        self.events = 0
        self.created: set[str] = set()
        self.ended = False
        self.writer: asyncio.StreamWriter | None = None


async def _stream(host: str, port: int, token: str, c: _Client, connected: asyncio.Event) -> None:
    request = (
        f"GET {EVENTS_PATH}?timeout={STREAM_SECONDS} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Token {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    while True:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # headers
        if status in (429, 503):  # an EventSource would give up on these; the bench counts them and tries again
            if status == 429:
                c.refused += 1
            else:
                c.unavailable += 1
            writer.close()
            await asyncio.sleep(RETRY_429_S)
            continue
        if status != 200:
            raise RuntimeError(f"GET {EVENTS_PATH}: HTTP {status}")
        break
    c.writer = writer
    kind = ""
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"retry:") and not c.connected_at:  # chunk-size lines (HTTP/1.1) are lines of their own
                c.connected_at = time.monotonic()
                connected.set()
            text = line.decode(errors="replace").strip()
            if text.startswith("event: "):
                kind = text[7:]
                if kind in ("end", "cutoff"):
                    break
            elif text.startswith("data: ") and kind == "task":
                event = json.loads(text[6:])
                c.events += 1
                if event["kind"] == "created" and event["task_type"] == TASK_TYPE:
                    c.created.add(event["task_id"])
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    c.ended = True


async def _streams_main(host: str, port: int, token: str, n: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    clients = [_Client() for _ in range(n)]
    flags = [asyncio.Event() for _ in range(n)]
    started = time.monotonic()
    tasks = [asyncio.create_task(_stream(host, port, token, c, f)) for c, f in zip(clients, flags, strict=True)]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), CONNECT_S)
    except TimeoutError:
        failed = [t.exception() for t in tasks if t.done() and t.exception()]
        pipe.send(("error", f"{sum(f.is_set() for f in flags)} of {n} connected in {CONNECT_S:.0f} s; {failed[:1]}"))
        return
    last = max(c.connected_at for c in clients)
    refused, unavailable = sum(c.refused for c in clients), sum(c.unavailable for c in clients)
    pipe.send(("connected", last, last - started, refused, sum(c.refused > 0 for c in clients), unavailable))
    expected: set[str] = await loop.run_in_executor(None, pipe.recv)  # the ids every client must get
    deadline = time.monotonic() + VERIFY_S
    while time.monotonic() < deadline and not all(expected <= c.created for c in clients):
        await asyncio.sleep(0.1)
    report = [(len(expected & c.created), c.events, c.ended) for c in clients]
    for c in clients:
        if c.writer is not None:
            c.writer.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(("report", report))


def _streams_child(host: str, port: int, token: str, n: int, pipe: Connection) -> None:
    asyncio.run(_streams_main(host, port, token, n, pipe))


class Streams:
    def __init__(self, server: procs.Server, token: str, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_streams_child, args=(server.host, server.port, token, n, child), daemon=True)
        self.proc.start()
        child.close()

    def connected(self) -> tuple[float, float, int, int, int]:
        """(monotonic time the last client connected, seconds it took, 429s, clients that got one, 503s)."""
        if not self._pipe.poll(CONNECT_S + 30):
            raise RuntimeError("the stream clients did not report")
        msg = self._pipe.recv()
        if msg[0] != "connected":
            raise RuntimeError(f"stream clients: {msg[1]}")
        return float(msg[1]), float(msg[2]), int(msg[3]), int(msg[4]), int(msg[5])

    def verify(self, expected: set[str]) -> list[tuple[int, int, bool]]:
        """Per client: (expected created events it got, events it got, whether its stream ended early)."""
        self._pipe.send(expected)
        if not self._pipe.poll(VERIFY_S + 30):
            raise RuntimeError("the stream clients did not report")
        msg = self._pipe.recv()
        self.proc.join(10)
        return list(msg[1])

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# --- the section -----------------------------------------------------------------------------------

IDLE, EVENTS, STREAMS = "idle", "events only", "streams"
SETTLE_S = 2.0  # after the creator starts (and the streams connect), before the timed requests
GONE_S = 6.0  # tasks_app/api/events.py KEEPALIVE_SECONDS (5) and a margin


@dataclass
class Tally:
    """One condition over every round: each request's seconds, and the web processes' cost meanwhile."""

    seconds: list[float] = field(default_factory=list)
    round_p99_ms: list[float] = field(default_factory=list)
    rows_per_page: int = -1
    errors: int = 0  # answers other than 200 (a 503: the database refused a connection)
    db_connections: int = 0  # the most connections to the bench database seen after a round
    wall_s: float = 0.0
    web_cpu_s: float = 0.0
    web_rss_kb: int = 0

    def pct(self, p: float) -> float:
        return _pct(self.seconds, p)

    @property
    def cores(self) -> float:
        return self.web_cpu_s / self.wall_s if self.wall_s else 0.0


@dataclass
class Delivery:
    """The streams over every round."""

    rounds: int = 0
    client_rounds: int = 0
    refused_429: int = 0  # 429 answers before connecting, every client of every round
    clients_refused: int = 0  # client-rounds that got at least one
    unavailable_503: int = 0  # 503 answers before connecting (the database refused a connection)
    connect_s: float = 0.0  # the slowest round: until its last client had read `retry:`
    expected: list[int] = field(default_factory=list)  # per round: created events every client must have had
    got_all: int = 0  # client-rounds that had every one of them
    worst_missing: int = 0
    events: list[int] = field(default_factory=list)  # events each client-round received
    ended_early: int = 0  # streams that ended (event: end / cutoff / closed) before the bench closed them
    created: int = 0  # tasks the creator made, every round with a creator
    create_errors: int = 0


# Opened before the server starts and held to the end: counting connections must not need a new one, as
# the server may have taken every slot PostgreSQL has (max_connections).
_watch: list[psycopg.Connection[Any]] = []


def _db_connections(cfg: Config) -> int:
    """Backends on the bench database but this query's own: the web processes' and this process's one."""
    if not _watch:
        _watch.append(connect(cfg.database_url))
    row = (
        _watch[0]
        .execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (cfg.database_name,),
        )
        .fetchone()
    )
    return int(row[0]) if row else 0


def _pct(seconds: list[float], p: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


def measure(cfg: Config) -> list[Row]:
    """Every condition in cfg.rounds interleaved rounds (rotated order, as section a does), so that a slow
    spell of the shared machine falls on all three alike; each condition's p50/p99 is over all its requests."""
    from django.apps import apps
    from django.conf import settings

    if not apps.ready:
        setup_django(cfg)
    n, clients, rate = (
        _int("BENCH_STREAM_REQUESTS", 2000),
        _int("BENCH_STREAM_CLIENTS", 100),
        _int("BENCH_STREAM_RATE", 20),
    )
    rounds = max(1, cfg.rounds)
    kinds = [IDLE, EVENTS, STREAMS]
    tallies = {k: Tally() for k in kinds}
    delivery = Delivery()
    _delete_tasks()  # what a killed run left
    token, made_user = _operator_token()
    _db_connections(cfg)
    try:
        with ProdServer(cfg) as server:
            print(
                f"(s) server up ({cfg.workers} gthread workers); {rounds} rounds of idle, {rate} creates/s, and "
                f"{rate} creates/s with {clients} streams, {n:,} GET /tasks each in all ...",
                flush=True,
            )
            list_latency.over_http(replace(cfg, latency_requests=200), server.host, server.port)  # warm-up
            done = 0
            for r in range(rounds):
                count = n // rounds + (1 if r < n % rounds else 0)
                for kind in kinds[r % 3 :] + kinds[: r % 3]:
                    _round(cfg, kind, server, token, clients, rate, count, done, tallies[kind], delivery)
                done += count
                p99s = ", ".join(f"{k} {tallies[k].round_p99_ms[-1]:.1f}" for k in kinds)
                print(f"(s) round {r + 1}: p99 ms {p99s}; {delivery.refused_429} 429s so far", flush=True)
    finally:
        while _watch:
            _watch.pop().close()
        _delete_tasks()
        _remove_user(made_user)
    threads = f"{os.environ.get('GUNICORN_THREADS') or 8} + {settings.TASKHUB_EVENT_STREAMS}"
    return _rows(tallies, delivery, clients, rate, threads, float(settings.TASKHUB_EVENTS_MAX_SECONDS))


def _round(
    cfg: Config,
    kind: str,
    server: procs.Server,
    token: str,
    clients: int,
    rate: int,
    count: int,
    offset: int,
    tally: Tally,
    delivery: Delivery,
) -> None:
    creator: Creator | None = None
    streams: Streams | None = None
    try:
        if kind != IDLE:
            creator = Creator(server, token, rate)
        last_at = 0.0
        if kind == STREAMS:
            streams = Streams(server, token, clients)
            last_at, connect_s, refused, clients_refused, unavailable = streams.connected()
            delivery.refused_429 += refused
            delivery.unavailable_503 += unavailable
            delivery.clients_refused += clients_refused
            delivery.connect_s = max(delivery.connect_s, connect_s)
            tally.db_connections = max(tally.db_connections, _db_connections(cfg))  # the streams' own peak
        if creator is not None:
            time.sleep(SETTLE_S)  # events flowing (to every stream) before the first timed request
        _timed(cfg, server, count, offset, tally)
        if creator is not None:
            made, errors = creator.finish()
            creator = None
            delivery.created += len(made)
            delivery.create_errors += errors
            if streams is not None:
                expected = {task_id for started, task_id in made if started > last_at}
                report = streams.verify(expected)
                streams = None
                # A closed stream's server thread notices at its next write (a keepalive within
                # KEEPALIVE_SECONDS once the creator stops) and only then gives its slot back: the next
                # condition starts without any.
                time.sleep(GONE_S)
                delivery.rounds += 1
                delivery.client_rounds += len(report)
                delivery.expected.append(len(expected))
                delivery.got_all += sum(got == len(expected) for got, _, _ in report)
                delivery.worst_missing = max([delivery.worst_missing] + [len(expected) - g for g, _, _ in report])
                delivery.events += [e for _, e, _ in report]
                delivery.ended_early += sum(ended for _, _, ended in report)
    finally:
        for child in (creator, streams):
            if child is not None:
                child.kill()


def _timed(cfg: Config, server: procs.Server, count: int, offset: int, tally: Tally) -> None:
    """Section c's request (bench/list_latency.over_http), `count` times: sequential, each on a new connection,
    every (type, status) pair in turn; the raw timings are kept so that rounds pool."""
    pairs = [(f"{BULK_TYPE_PREFIX}{t}", s) for t in range(cfg.task_types) for s in STATUSES]
    took: list[float] = []
    cpu_before, started = proc_stats.tree_cpu(server.proc.pid), time.perf_counter()
    for i in range(offset, offset + count):
        task_type, status = pairs[i % len(pairs)]
        url = "/tasks?" + urlencode({"task_type": task_type, "task_status": status})
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", url)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        took.append(time.perf_counter() - t0)
        if resp.status != 200:
            if not tally.errors:
                print(f"(s) GET {url}: HTTP {resp.status} {body[:300]!r}; see {server.log}", flush=True)
            tally.errors += 1
            continue
        rows = len(json.loads(body)["data"])
        if tally.rows_per_page == -1 or rows < tally.rows_per_page:
            tally.rows_per_page = rows
    tally.wall_s += time.perf_counter() - started
    tally.web_cpu_s += proc_stats.tree_cpu(server.proc.pid) - cpu_before
    tally.web_rss_kb = max(tally.web_rss_kb, proc_stats.rss_kb(server.proc.pid))
    tally.db_connections = max(tally.db_connections, _db_connections(cfg))
    tally.seconds += took
    tally.round_p99_ms.append(_pct(took, 0.99))


def _rows(tallies: dict[str, Tally], d: Delivery, clients: int, rate: int, threads: str, max_s: float) -> list[Row]:
    def row(kind: str, label: str) -> Row:
        t = tallies[kind]
        detail = (
            f"p50 {t.pct(0.5):.1f} ms, max {t.pct(1.0):.1f} ms; rounds' p99 "
            f"{', '.join(f'{x:.1f}' for x in t.round_p99_ms)} ms; {len(t.seconds):,} sequential requests, "
            f"{t.rows_per_page} rows/page; web {t.cores:.2f} cores, RSS {t.web_rss_kb / 1024:.0f} MB; "
            f"{t.db_connections} connections to the database; {t.errors} errors"
        )
        return Row(SECTION, f"GET /tasks, {label}", f"p99 {t.pct(0.99):.1f} ms", detail)

    idle, quiet, busy = (tallies[k].pct(0.99) for k in (IDLE, EVENTS, STREAMS))
    ratio = busy / idle if idle else 0.0
    delivered = (
        f"every client got all of its round's created events ({', '.join(map(str, d.expected))})"
        if d.got_all == d.client_rounds
        else f"{d.got_all} of {d.client_rounds} client-rounds got all created events "
        f"({', '.join(map(str, d.expected))}); worst missed {d.worst_missing}"
    )
    ev = sorted(d.events) or [0]
    return [
        row(IDLE, "idle"),
        row(EVENTS, f"{rate} creates/s, no stream"),
        row(STREAMS, f"{rate} creates/s, {clients} streams open"),
        Row(
            SECTION,
            f"{clients} event streams: delivery",
            f"{clients} x {d.rounds} open",
            f"each round's {clients} read `retry:` within {d.connect_s:.1f} s; {d.refused_429} 429s first "
            f"({d.clients_refused} client-rounds), {d.unavailable_503} 503s; {delivered}; events per client min "
            f"{ev[0]}, median {ev[len(ev) // 2]}, max {ev[-1]}; {d.ended_early} ended early; {d.created:,} tasks "
            f"created in all, {d.create_errors} errors; threads per process {threads}, streams capped at {max_s:.0f} s",
        ),
        Row(
            SECTION,
            f"GET /tasks p99, {clients} streams ÷ idle",
            f"{ratio:.2f}x",
            f"{busy / quiet if quiet else 0.0:.2f}x of {rate} creates/s without streams",
            "≤ 2x",
            ratio <= 2
            and d.got_all == d.client_rounds
            and d.client_rounds > 0
            and not any(t.errors for t in tallies.values())
            and not d.unavailable_503
            and not d.create_errors,
        ),
    ]


# --- the operator and the tasks --------------------------------------------------------------------


def _operator_token() -> tuple[str, bool]:
    """An operator's (staff user's) token: operators may create tasks and read every stream."""
    from django.contrib.auth import get_user_model

    from tasks_app.ops.accounts import token_issue

    model = get_user_model()
    user = model._default_manager.filter(username=OPERATOR).first()
    made = user is None
    if user is None:
        user = model(username=OPERATOR, is_staff=True)
        user.set_unusable_password()
        user.save()
    return token_issue(user=user), made


def _remove_user(made: bool) -> None:
    from django.contrib.auth import get_user_model

    if made:
        get_user_model()._default_manager.filter(username=OPERATOR).delete()  # its token goes with it


def _delete_tasks() -> None:
    from tasks_app.models import GlobalTask

    GlobalTask.objects.filter(task_type=TASK_TYPE).delete()  # their history rows with them
