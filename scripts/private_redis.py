"""A Redis for one `make test` run when none answers at TEST_REDIS_URL (called by scripts/test.sh).

Usage: private_redis.py URL DIR. Prints nothing when URL answers. Otherwise starts a redis-server on a
free loopback port with its files in DIR and prints `URL PID` of it: scripts/test.sh points the tests at
that URL and stops that pid when it exits. Without persistence: a test run's keys are worth nothing
after it, and writing them to disk would only slow the run down.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from taskhub import devstack

# A redis-server answers in well under a second; this much covers a loaded CI machine.
START_SECONDS = 10.0
# free_port() lets the port go before redis-server binds it: another program may take it meanwhile.
ATTEMPTS = 3


def start(data_dir: Path) -> tuple[str, int]:
    """Start redis-server in `data_dir`; its URL and pid once it answers. Raises RuntimeError if it cannot."""
    binary = devstack.redis_server_binary()
    for _ in range(ATTEMPTS):
        port = devstack.free_port()
        with (data_dir / "redis.log").open("ab") as log:
            # Its own session: Ctrl-C reaches pytest, whose teardown may still need Redis; test.sh's
            # exit trap stops it afterwards.
            popen = subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
                 "--save", "", "--appendonly", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + START_SECONDS
        while popen.poll() is None and time.monotonic() < deadline:
            if devstack.redis_alive(url):
                return url, popen.pid
            time.sleep(0.05)
        if popen.poll() is None:  # running but silent: not one to hand to the tests
            popen.kill()
            popen.wait()
    log_tail = (data_dir / "redis.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"a private redis-server did not start ({binary}); its log:\n{log_tail}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: private_redis.py URL DIR", file=sys.stderr)
        return 2
    url, data_dir = argv[0], Path(argv[1])
    if devstack.redis_alive(url):
        return 0
    try:
        private_url, pid = start(data_dir)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"No Redis answers at {url}, and starting a private one failed: {exc}", file=sys.stderr)
        return 1
    print(private_url, pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
