"""HTTP load against 127.0.0.1: wrk (installed with apt-get if missing), else a Python client."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import shutil
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.procs import LOG_DIR

# wrk's done() hook prints one JSON line we parse; the body is set once for every request.
_LUA = """
wrk.method = "POST"
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    tool: str
    requests: int
    seconds: float
    errors: int  # non-2xx/3xx answers, socket errors and timeouts
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def ensure_wrk() -> str | None:
    """The wrk binary; installs Debian's package if it is missing. None if that is impossible."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") is None:
        return None
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def apt(*args: str) -> bool:
        try:
            done = subprocess.run(
                ["apt-get", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    print("wrk not found; installing it with apt-get ...", flush=True)
    if not apt("install", "-y", "wrk"):
        apt("update")
        apt("install", "-y", "wrk")
    return shutil.which("wrk")


def post_load(wrk: str | None, url: str, body: dict[str, object], seconds: int, connections: int) -> LoadResult:
    if wrk is not None:
        return _wrk(wrk, url, body, seconds, connections)
    return _python(url, body, seconds, connections)


def _wrk(wrk: str, url: str, body: dict[str, object], seconds: int, connections: int) -> LoadResult:
    script = LOG_DIR / "post.lua"
    script.write_text(_LUA % json.dumps(json.dumps(body)))
    # One wrk thread: the machine has 2 cores and the server needs them more than the client.
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT "))
    r = json.loads(line.removeprefix("BENCH_RESULT "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return LoadResult("wrk", r["requests"], r["duration_us"] / 1e6, errors, r["p50_us"] / 1e3, r["p99_us"] / 1e3)


def _client_loop(args: tuple[str, int, str, float]) -> tuple[int, int, list[float]]:
    host, port, path_and_body, deadline = args
    path, payload = path_and_body.split("\n", 1)
    done = errors = 0
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("POST", path, body=payload, headers=headers)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status >= 400:
                errors += 1
        except OSError:
            errors += 1
        latencies.append(time.perf_counter() - started)
        done += 1
    return done, errors, latencies


def _python(url: str, body: dict[str, object], seconds: int, connections: int) -> LoadResult:
    """Fallback: one process per connection, new connection per request (gunicorn sync closes them)."""
    parts = urlsplit(url)
    with multiprocessing.Pool(connections) as pool:
        started = time.monotonic()
        deadline = started + seconds
        job = (parts.hostname or "127.0.0.1", parts.port or 80, f"{parts.path}\n{json.dumps(body)}", deadline)
        results = pool.map(_client_loop, [job] * connections)
    elapsed = time.monotonic() - started
    lat = sorted(x for _, _, ls in results for x in ls)
    p50 = lat[len(lat) // 2] * 1e3 if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3 if lat else 0.0
    return LoadResult("python", sum(r[0] for r in results), elapsed, sum(r[1] for r in results), p50, p99)
