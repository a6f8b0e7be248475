"""Experiment names: ``<prefix>_<YYYYmmddTHHMMSS>[_<comment>]`` (resutil 0.1.x format).

``prefix`` is six letters, base-26 of whole minutes since 2024-01-01T00:00 local time, so
names sort by time. ``<prefix>_<timestamp>`` is the identity; the comment is a label.
"""

from __future__ import annotations

import functools
import os
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import ExperimentError

EPOCH = datetime(2024, 1, 1)
TIME_FORMAT = "%Y%m%dT%H%M%S"
IDENTITY_LEN = 22  # "aapiyl_20240706T064339"
NAME_RE = re.compile(r"^([a-z]{6})_(\d{8}T\d{6})(?:_(.*))?$")
IDENTITY_RE = re.compile(r"[a-z]{6}_\d{8}T\d{6}")  # an identity at the start of a string
# Where an experiment name may appear inside a longer string (a path in argv, a 0.1.x
# dependency entry such as "results/aapiyl_..._x"): stops at the next path separator.
NAME_IN_TEXT_RE = re.compile(r"(?<![A-Za-z])[a-z]{6}_\d{8}T\d{6}(?:_[^/\\\s]*)?")
INVALID_COMMENT_CHARS = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
MAX_COMMENT_LEN = 200


def new_run_id() -> str:
    """A globally unique run id: a UUIDv7 (RFC 9562), so ids also sort by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 \
        | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def to_base26(n: int) -> str:
    """Six lowercase letters for ``n`` (most significant first), as 0.1.x wrote them."""
    letters = []
    for _ in range(6):
        letters.append(chr(ord("a") + n % 26))
        n //= 26
    return "".join(reversed(letters))


def prefix_for(when: datetime) -> str:
    """The six-letter prefix for a local time."""
    return to_base26(int((when - EPOCH).total_seconds() // 60))


def comment_problem(comment: str) -> str | None:
    """Why ``comment`` cannot be used, or None when it is valid."""
    if len(comment) > MAX_COMMENT_LEN:
        return f"a comment has at most {MAX_COMMENT_LEN} characters"
    if INVALID_COMMENT_CHARS.search(comment):
        return 'a comment cannot contain \\ / : * ? " < > | or control characters'
    if comment != comment.strip():
        return "a comment cannot start or end with white space"
    return None


def check_comment(comment: str) -> str:
    """Return ``comment`` or raise ExperimentError saying why it is invalid."""
    problem = comment_problem(comment)
    if problem:
        raise ExperimentError(f"invalid comment {comment!r}: {problem}")
    return comment


@dataclass(frozen=True, order=True)
class ExpName:
    """A parsed experiment name."""

    prefix: str
    timestamp: str
    comment: str = ""

    @property
    def identity(self) -> str:
        """``<prefix>_<timestamp>``: stays the same when the comment changes."""
        return f"{self.prefix}_{self.timestamp}"

    @property
    def name(self) -> str:
        return f"{self.identity}_{self.comment}" if self.comment else self.identity

    @property
    def time(self) -> datetime:
        t = self.timestamp  # YYYYmmddTHHMMSS, checked by NAME_RE (strptime: 10x slower)
        return datetime(int(t[0:4]), int(t[4:6]), int(t[6:8]), int(t[9:11]), int(t[11:13]),
                        int(t[13:15]))

    def with_comment(self, comment: str) -> ExpName:
        return ExpName(self.prefix, self.timestamp, check_comment(comment))

    def __str__(self) -> str:
        return self.name


def make_name(when: datetime, comment: str = "") -> ExpName:
    """The name of an experiment started at local time ``when``."""
    return ExpName(prefix_for(when), when.strftime(TIME_FORMAT), check_comment(comment))


# Listing 10,000 experiments parses each name several times (folder, row, metadata):
# names are immutable, so are their parses.
@functools.lru_cache(maxsize=1 << 16)
def parse_name(name: str) -> ExpName | None:
    """Parse an experiment name; None if it is not one."""
    m = NAME_RE.match(name)
    if not m:
        return None
    return ExpName(m.group(1), m.group(2), m.group(3) or "")


@functools.lru_cache(maxsize=1 << 16)
def identity_of(name: str) -> str:
    """The identity part of a name (or of a 0.1.x dependency entry like ``results/<name>``)."""
    found = NAME_IN_TEXT_RE.search(name)
    if not found:
        raise ExperimentError(f"{name!r} is not an experiment name (<prefix>_<YYYYmmddTHHMMSS>)")
    return found.group(0)[:IDENTITY_LEN]


def name_in_entry(entry: str) -> str:
    """The whole experiment name in a dependency entry: the entry itself, or the last part
    of a path that is one (0.1.x wrote ``results/<name>``). Spaces belong to the name."""
    for part in reversed(re.split(r"[/\\]", entry.rstrip("/\\"))):
        if NAME_RE.match(part):
            return part
    found = NAME_IN_TEXT_RE.search(entry)
    return found.group(0) if found else entry


def names_in_argv(argv: Iterable[str], results_dir: Path) -> list[str]:
    """Experiment names that argv arguments point at inside ``results_dir`` (0.1.x rule)."""
    root = results_dir.resolve()
    found: list[str] = []
    for arg in argv:
        for piece in arg.split("=", 1)[-1:]:  # also --flag=value
            if not NAME_IN_TEXT_RE.search(piece):
                continue
            try:
                rel = Path(piece).expanduser().resolve().relative_to(root)
            except (ValueError, OSError):
                continue
            if rel.parts and parse_name(rel.parts[0]) and rel.parts[0] not in found:
                found.append(rel.parts[0])
    return found

