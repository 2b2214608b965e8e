"""Diagnostic only: production settings (every middleware) with one extra no-op view at /bench-noop.

Shows how much of the gap between POST /task and the bare no-op is the middleware stack.
"""

from taskhub.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls_prod_noop"
