"""The local results folder: experiment folders, created atomically, found by prefix."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from .errors import ExperimentError, ExperimentNotFound, ResutilError
from .liveness import Owner, remove_entry, scratch_owner, scratch_prefix
from .naming import ExpName, check_comment, make_name, parse_name

INTERNAL_DIR = ".resutil"  # scratch space and caches; hidden so 0.1.x ignores it
DEBUG_NAME = "_debug"  # RESUTIL_DEBUG's scratch folder, as in 0.1.x
STALE_TMP_AGE = 3600.0  # scratch untouched this long was left by a killed process
CLEAN_EVERY = 60.0  # seconds between two searches of the scratch folder by one process
RESERVE_BYTES = 1 << 20  # set aside by a run so it can record its end on a full disk
# An untagged (older resutil) or other host's staged upload may be read for a long time
# after its last write: it is removed only after a day.
STALE_UPLOAD_AGE = 86400.0


class Workspace:
    """Experiment folders under ``results_dir``."""

    def __init__(self, results_dir: Path) -> None:
        self.root = Path(results_dir)
        self._cleaned = -CLEAN_EVERY  # when new_tmp last removed stale scratch

    @property
    def internal(self) -> Path:
        return self.root / INTERNAL_DIR

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the same disk as the results (renames stay atomic)."""
        return self.internal / "tmp"

    @property
    def cache_dir(self) -> Path:
        return self.internal / "cache"

    def path(self, name: str) -> Path:
        return self.root / name

    def names(self) -> dict[str, str]:
        """identity -> folder name for every local experiment."""
        out: dict[str, str] = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for e in sorted(entries, key=lambda e: e.name):
            parsed = parse_name(e.name)
            if parsed and e.is_dir():
                out[parsed.identity] = e.name
        return out

    def has(self, name: str) -> bool:
        parsed = parse_name(name)
        return bool(parsed) and parsed.identity in self.names()  # type: ignore[union-attr]

    def local_name(self, name: str) -> str | None:
        """The local folder name of the experiment with ``name``'s identity."""
        parsed = parse_name(name)
        if parsed is None:
            return None
        if "/" not in name and os.sep not in name and os.path.isdir(self.root / name):
            return name  # the usual case: no need to look at the others
        try:
            found = sorted(n for n in os.listdir(self.root) if n.startswith(parsed.identity))
        except FileNotFoundError:
            return None
        for n in found:
            p = parse_name(n)
            if p is not None and p.identity == parsed.identity and os.path.isdir(self.root / n):
                return n
        return None

    def create(self, comment: str = "", when: datetime | None = None) -> ExpName:
        """Make a new, empty experiment folder; never reuses an existing one or its identity.

        The identity is claimed first with an exclusive ``mkdir`` of the bare
        ``<prefix>_<timestamp>`` folder, which is then renamed to the full name. A process
        that cannot claim it, or finds a folder of that identity made earlier (with any
        comment), steps one second forward and tries again; so two processes starting in
        the same second both succeed, with different identities.
        """
        check_comment(comment)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResutilError(f"cannot create results folder {self.root}: {e.strerror}") from None
        when = (when or datetime.now()).replace(microsecond=0)
        for _ in range(1000):
            name = make_name(when, comment)
            claim = self.root / name.identity
            try:
                os.mkdir(claim)
            except FileExistsError:
                when += timedelta(seconds=1)
                continue
            except OSError as e:
                raise ResutilError(f"cannot create {self.root / name.name}: {e.strerror}") from None
            if any(n != name.identity for n in self._same_identity(name.identity)):
                os.rmdir(claim)  # an earlier experiment holds this identity
                when += timedelta(seconds=1)
                continue
            if name.name != name.identity:
                try:
                    os.rename(claim, self.root / name.name)
                except OSError as e:
                    os.rmdir(claim)
                    raise ResutilError(f"cannot create {self.root / name.name}: {e.strerror}") from None
            return name
        raise ResutilError(f"could not create a new experiment folder in {self.root}")

    def _same_identity(self, identity: str) -> list[str]:
        return [e.name for e in os.scandir(self.root) if e.name.startswith(identity)
                and (p := parse_name(e.name)) is not None and p.identity == identity]

    def resolve(self, query: str, remote_names: Iterable[str] = ()) -> str:
        """The full name for an experiment name, identity, unique prefix or unique comment."""
        query = query.rstrip("/").split("/")[-1]
        candidates: dict[str, str] = dict()
        for name in remote_names:
            parsed = parse_name(name)
            if parsed:
                candidates[parsed.identity] = name
        candidates.update(self.names())  # the local name wins when comments differ
        if not query:
            raise ExperimentError("an empty experiment name was given")
        for ident, name in candidates.items():
            if query in (name, ident):
                return name
        parsed = parse_name(query)
        if parsed and parsed.identity in candidates:  # renamed since: the identity still holds
            return candidates[parsed.identity]
        matches = sorted(n for n in candidates.values() if n.startswith(query))
        how = "type more of it"
        if not matches:  # not the start of a name: the comment, when one experiment has it
            matches = sorted(n for n in candidates.values()
                             if (p := parse_name(n)) is not None and p.comment == query)
            how = "name one by its prefix and time (see 'resutil list --grep')"
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ExperimentNotFound(
                f"no experiment matches '{query}' locally or on the remote; see 'resutil list'"
            )
        shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
        raise ExperimentError(f"'{query}' matches {len(matches)} experiments ({shown}); {how}")

    def rename(self, name: str, comment: str) -> str:
        """Give a local experiment a new comment; returns the new folder name."""
        parsed = parse_name(name)
        assert parsed is not None
        new = parsed.with_comment(comment).name
        if new != name:
            os.rename(self.root / name, self.root / new)
        return new

    def remove(self, name: str) -> None:
        """Delete an experiment folder; it disappears at once, then is cleaned up."""
        src = self.root / name
        trash = self.tmp_dir / f"{scratch_prefix('rm-' + name[:22])}{uuid.uuid4().hex[:8]}"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        os.rename(src, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def reserve(self, owner: Owner, size: int = RESERVE_BYTES) -> Path | None:
        """Set ``size`` bytes of this disk aside for ``owner`` (None if there is no room).

        A run deletes its reserve when it ends, so that on a disk its program filled it
        can still write its status, traceback and manifest. Reserves of dead owners go.
        """
        try:
            for entry in os.scandir(self.tmp_dir):
                other = Owner.parse(entry.name[8:]) if entry.name.startswith("reserve-") else None
                if other is not None and other.alive() is False:
                    os.unlink(entry.path)
        except OSError:
            pass
        path = self.tmp_dir / f"reserve-{owner.tag}"
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, size)
                except (AttributeError, OSError) as e:
                    if getattr(e, "errno", None) == errno.ENOSPC:
                        raise
                    f.write(bytes(size))  # no fallocate on this file system: write it out
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return None
        return path

    def new_tmp(self, label: str) -> Path:
        """A fresh scratch folder under the results folder (stale ones are removed first,
        at most once a minute)."""
        now = time.monotonic()
        if now - self._cleaned > CLEAN_EVERY:
            self._cleaned = now
            self.clean_stale_tmp()
        path = self.tmp_dir / f"{scratch_prefix(label)}{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except FileNotFoundError:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        return path

    def clean_stale_tmp(self, max_age: float = STALE_TMP_AGE) -> None:
        """Remove scratch left by killed processes: at once when its name's owner tag
        names a dead process on this host; else (another host's, or made before owner
        tags) pull and rm folders in which nothing changed for ``max_age`` s, and staged
        uploads and segments untouched for a day (an upload may read one for long)."""
        try:
            entries = list(os.scandir(self.tmp_dir))
        except OSError:
            return
        now = time.time()
        for entry in entries:
            owner = scratch_owner(entry.name)
            alive = owner.alive() if owner is not None else None
            if alive:
                continue
            if alive is None:
                if entry.name.startswith(("pull-", "rm-")):
                    age = max_age
                elif entry.name.startswith(".resutil"):
                    age = STALE_UPLOAD_AGE
                else:
                    continue
                try:
                    if _touched_since(Path(entry.path), now - age):
                        continue
                except OSError:
                    continue
            remove_entry(entry.path)


def _touched_since(path: Path, cutoff: float) -> bool:
    """Whether ``path`` or anything under it was modified after ``cutoff``."""
    if path.lstat().st_mtime >= cutoff:
        return True
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for n in (*dirs, *files):
                if os.lstat(os.path.join(root, n)).st_mtime >= cutoff:
                    return True
    return False
