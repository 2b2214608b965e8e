"""Files and directories only this process's user may read: var/ (the SQLite database, the dev admin
password, a private Redis's data, node data) holds secrets, so it is 0700 and secrets in it are 0600.
No Django here: the settings use it before Django is set up."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def tighten(path: Path, mode: int) -> None:
    """Take away every permission bit outside `mode`, never adding one. Only on what is ours: another
    user's file or directory is not ours to change (and chmod would fail). A missing path is no error."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    current = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.geteuid() and current & ~mode:
        path.chmod(current & mode)


def make_private_dir(path: Path, *, tighten_existing: bool) -> None:
    """Create `path` 0700 (its missing parents get the usual mode). An existing one is tightened only if
    `tighten_existing`: a directory someone chose for us may be shared on purpose."""
    created = not path.exists()
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if created or tighten_existing:
        tighten(path, PRIVATE_DIR)


def write_private(path: Path, text: str) -> None:
    """Write a secret, 0600 from its first byte: created so rather than chmod-ed after the write, which
    would leave it readable under the umask for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        # O_CREAT's mode only applies to a new file, and through the umask: an older one keeps its own.
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
