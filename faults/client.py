"""The suite's HTTP side: every request goes to the stack's gunicorn through the real API with the service
account's token, and every answer (or the lack of one) is kept with its time, so an experiment can say what
the API answered during its outage.

Load creates tasks with ids of its own choosing, and sends a create again (same id, same body) when it got
no answer or a 5xx: the seed API answers a repeated create with the first answer, so a task whose first
answer was lost is neither doubled nor forgotten. A create is *accepted* once it got a 200."""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Answer:
    at: float  # when the request was sent (time.time())
    endpoint: str  # "POST /task", "GET /healthz", ...
    status: int | None  # None: no HTTP answer at all
    kind: str  # "JSON", "HTML", another content type, or why there was no answer ("refused", "timeout", ...)
    seconds: float

    @property
    def label(self) -> str:
        return self.kind if self.status is None else f"{self.status} {self.kind}"


def _kind(content_type: str) -> str:
    base = content_type.split(";")[0].strip().lower()
    return {"application/json": "JSON", "text/html": "HTML", "": "no content type"}.get(base, base)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError | http.client.RemoteDisconnected | BrokenPipeError):
        return "reset"
    return type(exc).__name__


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = token
        self.answers: list[Answer] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: Any = None, *, endpoint: str = "") -> tuple[Answer, Any]:
        """One request on a connection of its own. Returns the answer (kept) and the parsed JSON body (or None)."""
        headers = {"Authorization": f"Token {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started, mono = time.time(), time.monotonic()
        parsed: Any = None
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_SECONDS)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            kind = _kind(response.getheader("Content-Type") or "")
            status: int | None = response.status
            if kind == "JSON":
                with contextlib.suppress(ValueError):
                    parsed = json.loads(raw)
        except (OSError, http.client.HTTPException) as exc:
            status, kind = None, _failure(exc)
        finally:
            conn.close()
        answer = Answer(started, endpoint or f"{method} {path}", status, kind, time.monotonic() - mono)
        with self._lock:
            self.answers.append(answer)
        return answer, parsed

    def between(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if start <= a.at <= end]

    # --- the calls the experiments make ------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> tuple[Answer, Any]:
        return self.request("POST", "/task", body, endpoint="POST /task")

    def task_update(self, task_id: str, status: str) -> Answer:
        answer, _ = self.request(
            "POST", "/task_update", {"task_id": task_id, "status": status}, endpoint="POST /task_update"
        )
        return answer


def tally(answers: Iterable[Answer], *, skip_ok: bool = False) -> str:
    """What came back, most frequent first: "503 JSON x288, 200 JSON x12, refused x3". With skip_ok, only
    the errors (4xx, 5xx, no answer), beside how many answers there were in all."""
    answers = list(answers)
    if skip_ok:
        errors = [a for a in answers if a.status is None or a.status >= 400]
        return f"{len(answers):,} answers; errors: {tally(errors) if errors else 'none'}"
    if not answers:
        return "-"
    return ", ".join(f"{label} x{n}" for label, n in Counter(a.label for a in answers).most_common())


def by_endpoint(answers: Iterable[Answer]) -> str:
    """The tally of each endpoint apart, with how long its answers took (an outage must be answered
    promptly, not only in JSON): "POST /task: 200 JSON x40 in 0.01-0.2 s; GET /healthz: 503 JSON x9 in ..."."""
    grouped: dict[str, list[Answer]] = {}
    for answer in answers:
        grouped.setdefault(answer.endpoint, []).append(answer)
    return "; ".join(f"{endpoint}: {tally(group)} {took(group)}" for endpoint, group in sorted(grouped.items()))


def took(answers: Iterable[Answer]) -> str:
    """The median and the longest time to an answer: "in 0.01 s (max 0.20 s)"."""
    seconds = sorted(a.seconds for a in answers)
    if not seconds:
        return ""
    return f"in {seconds[len(seconds) // 2]:.2f} s (max {seconds[-1]:.2f} s)"


def executed_body(task_type: str, task_data: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": str(uuid.uuid4()), "task_type": task_type, "task_data": task_data, "execute": True}


@dataclass
class Load:
    """Creates `count` tasks (bodies from make_body(i)) at `rate` a second from `threads` threads; with
    count=None, until stop(). Each create is retried until accepted, refused with a 4xx, or retry_for
    seconds have passed since its first try."""

    api: Api
    make_body: Callable[[int], dict[str, Any]]
    count: int | None
    rate: float
    threads: int = 4
    retry_for: float = 120.0
    submitted: list[str] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # task id -> the 4xx it got
    _stopping: threading.Event = field(default_factory=threading.Event)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self._t0 = time.monotonic()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"faults-load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _claim(self) -> int | None:
        with self._lock:
            if self._stopping.is_set() or (self.count is not None and self._next >= self.count):
                return None
            i = self._next
            self._next += 1
            return i

    def _run(self) -> None:
        while (i := self._claim()) is not None:
            delay = self._t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = self.make_body(i)
            with self._lock:
                self.submitted.append(body["task_id"])
            self._create(body)

    def _create(self, body: dict[str, Any]) -> None:
        first, wait = time.monotonic(), 0.2
        while True:
            answer, parsed = self.api.create(body)
            if answer.status == 200 and isinstance(parsed, dict) and parsed.get("success"):
                with self._lock:
                    self.accepted.add(body["task_id"])
                return
            if answer.status is not None and 400 <= answer.status < 500 and answer.status != 429:
                with self._lock:
                    self.refused[body["task_id"]] = answer.label
                return
            if time.monotonic() - first > self.retry_for:
                return  # neither accepted nor refused: audited as "unanswered", never as lost
            time.sleep(wait * random.uniform(0.5, 1.0))
            wait = min(2.0, wait * 2)

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.1, deadline - time.monotonic()))


class Prober(threading.Thread):
    """While an outage lasts, calls every kind of endpoint in turn (reads and writes on both surfaces, and
    /healthz), so the tally shows what each answered, not only the creates."""

    def __init__(self, api: Api, task_id: str, tracked_id: str, interval: float = 0.1) -> None:
        super().__init__(name="faults-prober", daemon=True)
        self.api, self.interval = api, interval
        self.calls: list[tuple[str, str, Any, str]] = [
            ("GET", "/healthz", None, "GET /healthz"),
            ("GET", f"/task/{task_id}", None, "GET /task/<id>"),
            ("GET", "/tasks?limit=5", None, "GET /tasks"),
            ("GET", "/api/v1/tasks/?page_size=5", None, "GET /api/v1/tasks/"),
            ("GET", f"/api/v1/tasks/{task_id}/", None, "GET /api/v1/tasks/<id>/"),
            ("POST", "/task_update", {"task_id": tracked_id, "status": "in_progress"}, "POST /task_update"),
            ("PUT", f"/task/{tracked_id}", {"task_data": {"probe": True}}, "PUT /task/<id>"),
        ]
        self._stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._stopping.is_set():
            method, path, body, endpoint = self.calls[i % len(self.calls)]
            self.api.request(method, path, body, endpoint=endpoint)
            i += 1
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=TIMEOUT_SECONDS + 5)
