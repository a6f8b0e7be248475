"""Whether the process that made something is still alive: host + pid + process start.

A pid alone is reused; the kernel's start time of the process (``/proc/<pid>/stat``,
field 22, in clock ticks since boot) makes the pair unique for as long as the machine is
up. Scratch files, part files and running experiments carry an owner tag so the next
command can tell a live writer from one that was killed, without waiting for an age limit.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_SEP = "."


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (an opaque string), or None if it is gone.

    Where ``/proc`` is missing (macOS, Windows) a live pid gives "0": liveness then rests
    on the pid alone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return _pid_exists_start(pid)
    # The command name (field 2) is in parentheses and may hold spaces or ")".
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else "0"


def _pid_exists_start(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "0"
    return "0"


@lru_cache(maxsize=1)
def this_host() -> str:
    """This machine's host name (without dots, so it fits in an owner tag)."""
    return socket.gethostname().split(".")[0].replace(_SEP, "-") or "localhost"


@lru_cache(maxsize=4)
def _current(pid: int) -> Owner:
    return Owner(this_host(), pid, process_start(pid) or "0")


@dataclass(frozen=True)
class Owner:
    """The process that owns a file or a run."""

    host: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return _current(pid)  # (by pid: a forked child is another owner)

    @property
    def tag(self) -> str:
        """``host.pid.start``: safe inside a file name."""
        return f"{self.host}{_SEP}{self.pid}{_SEP}{self.start}"

    @classmethod
    def parse(cls, tag: str) -> Owner | None:
        """The owner named by a tag, or None if ``tag`` is not one."""
        host, sep, rest = tag.rpartition(_SEP)
        host, sep2, pid = host.rpartition(_SEP)
        if not (sep and sep2 and host and pid.isdigit()):
            return None
        return cls(host, int(pid), rest)

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "pid": self.pid, "start": self.start}

    @classmethod
    def from_dict(cls, data: object) -> Owner | None:
        if not isinstance(data, dict):
            return None
        host, pid, start = data.get("host"), data.get("pid"), data.get("start")
        if not isinstance(host, str) or not isinstance(pid, int) or isinstance(pid, bool):
            return None
        return cls(host, pid, str(start))

    def alive(self) -> bool | None:
        """True/False on this host; None for another host's process (cannot tell)."""
        if self.host != this_host():
            return None
        start = process_start(self.pid)
        if start is None:
            return False
        return self.start in ("0", start) or start == "0"


# -- scratch files and folders --------------------------------------------------------------------
_SCRATCH_MARK = "@"


def scratch_prefix(kind: str) -> str:
    """``<kind>@<owner tag>@``: how the name of a scratch file or folder this process makes
    begins, so that the next command can tell whether its owner is still alive."""
    return f"{kind}{_SCRATCH_MARK}{Owner.current().tag}{_SCRATCH_MARK}"


def scratch_owner(name: str) -> Owner | None:
    """The owner named in a scratch name made with ``scratch_prefix`` (None: untagged)."""
    parts = name.split(_SCRATCH_MARK, 2)
    return Owner.parse(parts[1]) if len(parts) == 3 else None


def remove_dead_scratch(folder: Path | str) -> None:
    """Remove the scratch files and folders in ``folder`` whose owner, a process on this
    host, is gone (killed mid-push or mid-pull). Best effort: errors are ignored."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        owner = scratch_owner(entry.name)
        if owner is not None and owner.alive() is False:
            remove_entry(entry.path)


def remove_entry(path: str) -> None:
    """Delete a file or a whole folder (not following links); errors are ignored."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass
