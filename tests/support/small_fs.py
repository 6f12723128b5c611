"""A small file system the test mounts itself (tmpfs), to fill it or mount it read-only."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path


class MountRefused(Exception):
    """This machine does not let the test mount (not root, or in a container without the right)."""


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))


def bind_read_only(source: Path, where: Path) -> None:
    """`source` seen again at `where`, read-only (as root, file modes would not stop writes)."""
    where.mkdir(parents=True, exist_ok=True)
    _mount("--bind", "-o", "ro", str(source), str(where))


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        raise MountRefused("mounting needs root (CI runs as root)")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MountRefused(f"mount {' '.join(args)} was refused: {done.stderr.strip()}")


def unmount(where: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(path: Path) -> None:
    """Write `path` until the file system is full (big blocks, then small ones for the rest)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 512):
            block = bytes(size)
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
