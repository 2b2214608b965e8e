"""What `taskhub login` saves: the server's URL and an API token, in $XDG_CONFIG_HOME/taskhub/config.json
(default ~/.config/taskhub/config.json), readable by its owner only (0600, in a 0700 directory).

The token is sent only to the URL it was saved for, so `--url` pointing elsewhere never leaks it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cli.errors import UsageProblem

CONFIG_HOME_ENV = "XDG_CONFIG_HOME"


@dataclass(frozen=True)
class Saved:
    url: str
    token: str


def config_path() -> Path:
    base = os.environ.get(CONFIG_HOME_ENV, "").strip()
    # The XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "taskhub" / "config.json"


def load() -> Saved | None:
    """What login saved, or None when not logged in."""
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageProblem(f"cannot read {path}: {exc}; fix it, or run `taskhub logout` to remove it") from exc
    if not (isinstance(data, dict) and isinstance(data.get("url"), str) and isinstance(data.get("token"), str)):
        raise UsageProblem(f"{path} is not what `taskhub login` writes; run `taskhub logout` to remove it")
    return Saved(url=data["url"], token=data["token"])


def save(*, url: str, token: str) -> Path:
    """Write the file atomically, 0600 from its first byte (never world-readable, even for a moment)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": url, "token": token}, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def remove() -> bool:
    """Delete the file. Whether there was one."""
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True
