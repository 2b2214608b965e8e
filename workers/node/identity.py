"""Who this process is when it runs as a node worker. Set by `python -m workers <name>`."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def name() -> str:
    return str(settings.TASKHUB_NODE_NAME)


def data_dir() -> Path:
    path = Path(settings.TASKHUB_NODE_DATA_DIR or (Path(settings.VAR_DIR) / "nodes" / name()))
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir() -> Path:
    """Bookkeeping of the node agent itself (run ledger, locks), apart from the user's data."""
    path = data_dir() / ".taskhub"
    path.mkdir(parents=True, exist_ok=True)
    return path
