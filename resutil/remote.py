"""A project's experiments on a storage, in the 0.1.x layout.

    <root>/<project>/<name>.zip                        the archive (0.1.x reads exactly this)
    <root>/<project>.resutil/<identity>.<status>.json  a sidecar: metadata, the archive's hash
    <root>/<project>.resutil-files/<name>              files that are not experiments (a
                                                       workflow engine's, e.g. Snakemake's
                                                       sources archive)

The sidecar folder sits beside the project folder, not in it, so a 0.1.x client listing
``<project>/`` sees no extra entries. The status in the sidecar's name lets ``resutil
list`` show every experiment's status from one listing, without reading any sidecar
(``<identity>.json``, without it, is read too). Archives without a sidecar (pushed by
0.1.x) are read by fetching their metadata once and caching it.

One file of an archive is read without the rest (``open_member``): the sidecar records
where every member lies (``archive.members``), so a read costs one ranged request;
without that (0.1.x, or a sidecar not paired with the archive listed) the archive's
central directory is read from its end, once per archive version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from .archive import (
    DEFAULT_DEFLATE_LIMIT,
    ArchiveInfo,
    Member,
    MemberReader,
    build_archive,
    meta_head_of,
    read_central_directory,
)
from .atomic import write_atomic
from .errors import ArchiveError, ExperimentError, ExperimentNotFound, StorageNotFound
from .hashing import HASH_ALGORITHM
from .liveness import this_host
from .metadata import EXP_FILE, STATUSES, ExpMeta, Manifest, parse_meta, read_meta, write_meta
from .naming import IDENTITY_LEN, IDENTITY_RE, NAME_RE, parse_name
from .progress import NO_PROGRESS, Callback
from .storage.base import ObjectInfo, Storage

log = logging.getLogger(__name__)

ARCHIVE_SUFFIX = ".zip"
SIDECAR_SUFFIX = ".json"
CLAIM_SUFFIX = ".claim"
# The statuses a sidecar's name can carry: <identity>.<status>.json
LISTED_STATUSES = STATUSES
LISTING_CACHE = "listing.txt"  # the names the last listing found (for shell completion)
SIDECAR_FORMAT = 1
MAX_SIDECAR_SIZE = 16 << 20  # a sidecar holds metadata and a layout, never file contents
SIDECAR_FILES = 10_000  # a sidecar lists the files (~100 bytes each) of a run with up to this many


def sidecar_problem(data: Any) -> str | None:
    """Why a sidecar's content cannot be used (None when it can): remote data is untrusted."""
    return _check_sidecar(data)[0]


def _check_sidecar(data: Any) -> tuple[str | None, ExpMeta | None]:
    """(why a sidecar's content cannot be used, or None; its metadata when it can)."""
    problem = _sidecar_shape(data)
    if problem:
        return problem, None
    try:
        return None, ExpMeta.from_dict(data["meta"])
    except Exception as e:  # noqa: BLE001 - any shape may arrive from the storage
        return f"has unusable metadata ({e})", None


def _sidecar_shape(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "is not a JSON object"
    archive, meta = data.get("archive"), data.get("meta")
    if not isinstance(archive, dict) or not isinstance(meta, dict):
        return "lacks 'archive' or 'meta'"
    if not isinstance(archive.get("name"), str) or not _is_int(archive.get("size")):
        return "has no archive name or size"
    for key in ("hash", "version"):
        if archive.get(key) is not None and not isinstance(archive[key], str):
            return f"has a bad archive {key}"
    described = archive.get("described")
    if described is not None and not (
            isinstance(described, list)
            and all(isinstance(p, list) and len(p) == 2 and all(map(_is_int, p)) for p in described)):
        return "has a bad archive layout"
    if data.get("run_id") is not None and not isinstance(data["run_id"], str):
        return "has a bad run id"
    return None


def sidecar_name(identity: str, status: str | None) -> str:
    """The sidecar's object name: the status in it when it is one of LISTED_STATUSES."""
    if status in LISTED_STATUSES:
        return f"{identity}.{status}{SIDECAR_SUFFIX}"
    return identity + SIDECAR_SUFFIX


def parse_sidecar_name(name: str) -> tuple[str, str | None] | None:
    """(identity, status or None) for a sidecar's object name; None if it is not one."""
    if not name.endswith(SIDECAR_SUFFIX) or not IDENTITY_RE.match(name):
        return None
    identity = name[:IDENTITY_LEN]
    middle = name[IDENTITY_LEN:-len(SIDECAR_SUFFIX)]
    if not middle:
        return identity, None
    status = middle[1:]
    if middle[0] != "." or status not in LISTED_STATUSES:
        return None
    return identity, status


def cached_names(cache_dir: Path) -> list[str]:
    """The remote experiment names the last listing found (kept under ``cache_dir``), for
    shell completion; [] when none was made. Never contacts the storage."""
    try:
        text = (cache_dir / LISTING_CACHE).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return []
    return [n for n in text.splitlines() if parse_name(n)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _key_part(version: str) -> str:
    """A version as part of a cache file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in version)[:120]


_warned: set[tuple[str, str | None]] = set()  # each bad sidecar is reported once


def _ignored(exp: RemoteExperiment, why: str) -> None:
    key = (exp.name, exp.sidecar.version if exp.sidecar else None)
    if key not in _warned:
        _warned.add(key)
        log.warning("ignoring the sidecar of %s on the remote: it %s; reading its archive "
                    "instead", exp.name, why)
    return None


@dataclass(frozen=True)
class MemberIndex:
    """Where the members of one archive lie (name -> Member), the content hash recorded
    for each file (name -> hash; empty when none is), and where the index came from:
    "sidecar" or "directory" (the archive's central directory)."""

    members: dict[str, Member]
    digests: dict[str, str]
    source: str


class RemoteExperiment(NamedTuple):
    """One experiment on the remote: its archive and, if present, its sidecar (the newest,
    when an interrupted push left another of an older status: ``stale_sidecars``)."""

    name: str
    archive: ObjectInfo
    sidecar: ObjectInfo | None = None
    stale_sidecars: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        return self.name[:IDENTITY_LEN]

    @property
    def listed_status(self) -> str | None:
        """The status its sidecar's name gives (None: no sidecar, or one named without)."""
        parsed = parse_sidecar_name(self.sidecar.name) if self.sidecar else None
        return parsed[1] if parsed else None


class Remote:
    """Push, pull and inspect one project's experiments on a storage."""

    def __init__(self, storage: Storage, project: str, cache_dir: Path | None = None) -> None:
        self.storage = storage
        self.project = project
        self.archive_folder = project
        self.meta_folder = f"{project}.resutil"
        self.cache_dir = cache_dir
        self._listing: dict[str, RemoteExperiment] | None = None
        self._listing_lock = threading.Lock()
        self._sidecars: dict[str, dict[str, Any]] = {}  # cache key -> sidecar, this process
        self._metas: dict[str, ExpMeta] = {}  # cache key -> its checked metadata

    def describe(self) -> str:
        return f"{self.storage.describe()}/{self.project}"

    # -- listing ------------------------------------------------------------------------
    def experiments(self, refresh: bool = False) -> dict[str, RemoteExperiment]:
        """identity -> RemoteExperiment for every complete archive on the remote."""
        if self._listing is not None and not refresh:
            return self._listing
        # Two listings, side by side: each page is a network round trip.
        with ThreadPoolExecutor(2) as pool:
            side_listing = pool.submit(self.storage.list, self.meta_folder)
            archives = self.storage.list(self.archive_folder)
            sidecars: dict[str, ObjectInfo] = {}
            stale: dict[str, list[str]] = {}
            # The newest sidecar of an identity counts; an older one (of another status)
            # is what a push interrupted between writing the new and deleting the old left.
            for o in sorted(side_listing.result(), key=lambda o: (o.mtime or 0, o.name)):
                parsed = parse_sidecar_name(o.name)
                if parsed is None:
                    continue
                ident = parsed[0]
                if ident in sidecars:
                    stale.setdefault(ident, []).append(sidecars[ident].name)
                sidecars[ident] = o
        found: dict[str, RemoteExperiment] = {}
        for obj in archives:
            name = obj.name[:-len(ARCHIVE_SUFFIX)]
            if not obj.name.endswith(ARCHIVE_SUFFIX) or not NAME_RE.match(name):
                continue
            identity = name[:IDENTITY_LEN]
            prev = found.get(identity)
            # Two archives of one identity only after an interrupted rename: newest wins.
            if prev and (prev.archive.mtime or 0) >= (obj.mtime or 0):
                continue
            found[identity] = RemoteExperiment(name, obj, sidecars.get(identity),
                                               tuple(stale.get(identity, ())))
        log.debug("listed %d experiments (%d sidecars) on %s", len(found), len(sidecars),
                  self.describe())
        self._listing = found
        self._remember_names(sorted(e.name for e in found.values()))
        return found

    def _remember_names(self, names: list[str]) -> None:
        """Keep the listed names for shell completion (``cached_names``)."""
        if self.cache_dir is None:
            return
        text = "\n".join(names) + "\n" if names else ""
        path = self.cache_dir / LISTING_CACHE
        try:
            if path.read_text(encoding="utf-8") == text:
                return
        except (OSError, ValueError):
            pass
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text.encode("utf-8"))
        except OSError:
            pass  # a cache is an optimisation

    def names(self) -> list[str]:
        return [e.name for e in self.experiments().values()]

    def get(self, name: str) -> RemoteExperiment | None:
        parsed = parse_name(name)
        return self.experiments().get(parsed.identity) if parsed else None

    def require(self, name: str) -> RemoteExperiment:
        exp = self.get(name)
        if exp is None:
            raise ExperimentNotFound(f"{name} is not on the remote {self.describe()}")
        return exp

    # -- metadata -----------------------------------------------------------------------
    def sidecar(self, exp: RemoteExperiment, fetch: bool = True) -> dict[str, Any] | None:
        """The sidecar content, valid or None, from the local cache when it is current.

        The cache is keyed on the sidecar's version on the storage (its content), never on
        a time. With ``fetch=False`` only the cache is consulted (listing stays one request).
        """
        if exp.sidecar is None:
            return None
        version = exp.sidecar.version
        key = f"{exp.identity}-side-{_key_part(version)}.json" if version else None
        if key is not None and key in self._sidecars:
            return self._sidecars[key]
        cached = self._cache_read(key) if key else None
        if cached is not None and key is not None:
            self._remember(key, cached)
        if cached is not None or not fetch:
            return cached
        if exp.sidecar.size > MAX_SIDECAR_SIZE:
            return _ignored(exp, f"is {exp.sidecar.size} bytes (at most {MAX_SIDECAR_SIZE})")
        try:
            data = json.loads(self.storage.read_bytes(self.meta_folder, exp.sidecar.name))
        except StorageNotFound:
            return None  # removed since the listing
        except (ValueError, UnicodeDecodeError):
            return _ignored(exp, "is not JSON")
        problem, meta = _check_sidecar(data)
        if problem:
            return _ignored(exp, problem)
        if key:
            self._cache_write(key, data)
            self._remember(key, data)
            self._metas[key] = meta  # (checked: meta() need not build it again)
        return data

    def _remember(self, key: str, data: dict[str, Any]) -> None:
        """Keep a sidecar read in this process for the next question about it (a push or
        pull of many asks several times)."""
        if len(self._sidecars) >= 20_000:
            self._sidecars.clear()
            self._metas.clear()
        self._sidecars[key] = data

    def paired(self, exp: RemoteExperiment) -> dict[str, Any] | None:
        """The sidecar when it was written for the archive the listing shows, else None.

        A push replaces the archive, then the sidecar: a reader in between, or after a push
        that was killed or raced by another, sees an archive version the sidecar does not
        name, and then reads the archive itself instead of trusting another push's facts.
        """
        side = self.sidecar(exp)
        if side is None:
            return None
        archive = side["archive"]
        if archive.get("name") != exp.archive.name or archive.get("size") != exp.archive.size:
            return None
        recorded, listed = archive.get("version"), exp.archive.version
        if recorded is not None and listed is not None and recorded != listed:
            return None
        return side

    def meta(self, exp: RemoteExperiment) -> ExpMeta:
        """The experiment's metadata without its manifest, fetching an archive only once."""
        side = self.paired(exp)
        if side is not None:
            version = exp.sidecar.version if exp.sidecar else None
            known = self._metas.get(f"{exp.identity}-side-{_key_part(version)}.json"
                                    if version else "")
            # A copy of the one checked when the sidecar was read (lists copied too).
            meta = replace(known, dependencies=list(known.dependencies)) if known else \
                ExpMeta.from_dict(side["meta"])
            meta.set_name(exp.name)
            return meta
        version = exp.archive.version
        key = f"{exp.identity}-archive-{_key_part(version)}.json" if version else None
        cached = self._cache_read(key) if key else None
        if cached is None:
            cached = {"meta": self._meta_from_archive(exp).head_dict()}
            if key:
                self._cache_write(key, cached)
        meta = ExpMeta.from_dict(cached["meta"])
        meta.set_name(exp.name)
        return meta

    def run_id(self, exp: RemoteExperiment) -> str | None:
        """The run id of the experiment the remote holds (None for a run without one)."""
        return self.meta(exp).run_id

    def _meta_from_archive(self, exp: RemoteExperiment) -> ExpMeta:
        """The metadata of an archive without a usable sidecar: its metadata member alone,
        found through the central directory (ranged reads; size-capped: untrusted)."""
        index = self.member_index(exp, sidecar=False)
        if EXP_FILE not in index.members:
            return ExpMeta(name=exp.name)
        reader = self.open_member(exp, EXP_FILE, index)
        try:
            text = meta_head_of(reader, exp.archive.name)  # type: ignore[arg-type]
        except UnicodeDecodeError as e:
            raise ArchiveError(
                f"{exp.archive.name}: its {EXP_FILE} is not UTF-8 ({e})") from None
        return parse_meta(text, with_manifest=False)

    # -- single members -------------------------------------------------------------------
    def member_index(self, exp: RemoteExperiment, sidecar: bool = True) -> MemberIndex:
        """Where every member of the archive lies: from its sidecar when that is paired with
        the archive listed and records it (no request once the sidecar is cached), else
        from the archive's central directory (cached per archive version)."""
        side = self.paired(exp) if sidecar else None
        digests: dict[str, str] = {}
        if side is not None:
            manifest = side["meta"].get("manifest") or {}
            files = manifest.get("files")
            same = manifest.get("algorithm", HASH_ALGORITHM) == HASH_ALGORITHM
            if same and isinstance(files, dict):
                digests = {p: v[1] for p, v in files.items()
                           if isinstance(v, list) and len(v) == 2 and isinstance(v[1], str)}
            rows = side["archive"].get("members")
            if rows is not None:
                try:
                    members = [Member.from_row(r) for r in rows]
                except (ValueError, TypeError) as e:
                    log.warning("ignoring the member index in the sidecar of %s: %s",
                                exp.name, e)
                else:
                    return MemberIndex({m.name: m for m in members}, digests, "sidecar")
        return MemberIndex({m.name: m for m in self._directory(exp)}, digests, "directory")

    def _directory(self, exp: RemoteExperiment) -> list[Member]:
        """The archive's central directory, read from its end (ranged requests), cached
        under its version (an archive's content never changes under one version)."""
        version = exp.archive.version
        key = f"{exp.identity}-members-{_key_part(version)}.json" if version else None
        cached = self._cache_read(key) if key else None
        if cached is not None:
            try:
                return [Member.from_row(r) for r in cached["members"]]
            except (ValueError, TypeError, KeyError):
                pass  # a damaged cache entry: read the archive again
        members = read_central_directory(self._fetcher(exp), exp.archive.size,
                                         f"{exp.archive.name} on the remote")
        if key:
            self._cache_write(key, {"members": [m.row() for m in members]})
        return members

    def _fetcher(self, exp: RemoteExperiment):
        """Ranged reads of the archive the listing shows (that version, where the storage
        can ask for one)."""
        def fetch(start: int, length: int) -> bytes:
            return self.storage.read_range(self.archive_folder, exp.archive.name, start,
                                           length, exp.archive.version)
        return fetch

    def open_member(self, exp: RemoteExperiment, name: str, index: MemberIndex | None = None
                    ) -> MemberReader:
        """A reader of one member of the archive (ranged reads as it is read; its size, CRC
        and recorded hash checked before its end is handed out). ExperimentNotFound when the
        archive has no such member."""
        index = index or self.member_index(exp)
        member = index.members.get(name)
        if member is None:
            raise ExperimentNotFound(f"{exp.name} on the remote has no file '{name}'")
        return MemberReader(self._fetcher(exp), member, exp.archive.size,
                            f"{exp.archive.name} on the remote", index.digests.get(name))

    def expected_hash(self, exp: RemoteExperiment) -> str | None:
        return self._archive_facts(exp).get("hash")

    def stream_facts(self, exp: RemoteExperiment) -> tuple[str | None, dict[int, int] | None]:
        """(recorded hash, layout) for extracting while downloading; the layout maps a
        header offset to the compressed size of each member with a data descriptor. Either
        is None when the sidecar does not record it."""
        facts = self._archive_facts(exp)
        described = facts.get("described")
        layout = None
        if isinstance(described, list):
            try:
                layout = {int(off): int(size) for off, size in described}
            except (TypeError, ValueError):
                layout = None
        return facts.get("hash"), layout

    def _archive_facts(self, exp: RemoteExperiment) -> dict[str, Any]:
        side = self.paired(exp)
        return side["archive"] if side is not None else {}

    # -- files shared by the project's users --------------------------------------------------
    def read_shared(self, name: str, limit: int) -> bytes | None:
        """A file of the metadata folder that clients share (a cache: see lineage.index);
        None when there is none, or when it is larger than ``limit`` (remote data is
        untrusted: never more than that is read)."""
        try:
            data = self.storage.read_range(self.meta_folder, name, 0, limit + 1)
        except StorageNotFound:
            return None
        if len(data) > limit:
            log.warning("ignoring %s/%s on the remote: larger than %d MiB", self.meta_folder,
                        name, limit >> 20)
            return None
        return data

    def write_shared(self, name: str, data: bytes) -> None:
        """Replace a shared file of the metadata folder (all at once, as every write)."""
        self.storage.write_bytes(self.meta_folder, name, data)

    # -- identities -----------------------------------------------------------------------
    def claim(self, identity: str, run_id: str, name: str) -> str | None:
        """Claim ``identity`` for a run with one atomic create-if-absent on the storage.

        Returns the run id that holds the identity: ``run_id`` when this run has it (now or
        from before), another run's id, or None for a claim that names no run (damaged).
        """
        record = {"run_id": run_id, "name": name, "host": this_host(),
                  "claimed_at": datetime.now().astimezone().isoformat(timespec="seconds")}
        blob = json.dumps(record).encode("utf-8")
        claim_name = identity + CLAIM_SUFFIX
        if self.storage.create_exclusive(self.meta_folder, claim_name, blob):
            log.info("claimed %s for run %s", identity, run_id)
            return run_id
        try:
            holder = json.loads(self.storage.read_bytes(self.meta_folder, claim_name))
        except StorageNotFound:  # removed meanwhile: try once more
            if self.storage.create_exclusive(self.meta_folder, claim_name, blob):
                return run_id
            return None
        except (ValueError, UnicodeDecodeError):
            return None
        held = holder.get("run_id") if isinstance(holder, dict) else None
        return held if isinstance(held, str) else None

    # -- transfers ----------------------------------------------------------------------
    def store(self, folder: Path, callback: Callback = NO_PROGRESS,
              replaces: RemoteExperiment | None = None) -> ArchiveInfo:
        """Archive a local experiment folder and store it with its sidecar (use
        ``publish.publish``, which decides whether and where a folder may go).

        The archive goes first and appears all at once; the sidecar follows and names the
        archive's version. The local metadata gets the manifest computed while archiving.
        Large compressible files are deflated only for remote storage, and small ones at
        level 1 (else ``deflate.FAST_LEVEL``): a local folder or NAS has disk to spare and
        no bandwidth to save, so there CPU time is what counts.
        ``replaces``: the remote copy of this run (its archive, when under another label,
        and its sidecars of another status are removed after).
        """
        deflate_limit = DEFAULT_DEFLATE_LIMIT if self.storage.writes_in_place else None
        from .archive.deflate import FAST_LEVEL

        level = FAST_LEVEL if self.storage.writes_in_place else 1  # small files packed whole
        name = folder.name
        meta = read_meta(folder, with_manifest=False)

        def finish(manifest: Manifest) -> bytes:
            meta.manifest = manifest
            return write_meta(folder, meta, unless_same=True)

        archive_name = name + ARCHIVE_SUFFIX
        # Progress counts bytes once: while archiving when that writes to the storage
        # itself (local folder), else while uploading the finished archive.
        build_cb = callback if self.storage.writes_in_place else NO_PROGRESS
        with self.storage.staged_upload(self.archive_folder, archive_name, callback) as staged:
            with open(staged.path, "wb") as out:
                # No fsync: the rename makes the archive appear whole to every process; after
                # a power cut a torn archive fails its recorded hash on pull and verify.
                info = build_archive(folder, out, finish, build_cb, deflate_limit,
                                     self.storage.settings.scratch_dir, level)
        stored = staged.stored
        log.info("stored %s (%d bytes, version %s)", archive_name, info.size,
                 stored.version if stored else "unknown")
        written = self.write_sidecar(meta, info, archive_name,
                                     stored.version if stored else None)
        self._listed(name, stored, written, replaces)
        if stored is not None and stored.version is not None:
            now = self.storage.stat(self.archive_folder, archive_name)
            if now is None or now.version != stored.version:
                self._listing = None
                raise ExperimentError(
                    f"{name} was pushed by another process at the same time, so the remote "
                    f"copy may be that one; run 'resutil push {name}' again"
                )
        if replaces is not None and replaces.archive.name != archive_name:
            self.storage.delete(self.archive_folder, replaces.archive.name)
        if replaces is not None:
            self._delete_sidecars(replaces, keep=written)
        return info

    def _listed(self, name: str, archive: ObjectInfo | None, sidecar: ObjectInfo | None,
                replaces: RemoteExperiment | None) -> None:
        """Keep the cached listing current after a push: the stored objects replace what it
        showed of this identity (a push of many experiments lists the remote once, not
        once per experiment). Unknown to the listing when the storage does not say what it
        stored: then the next question lists again."""
        with self._listing_lock:
            listing = self._listing
            if listing is None:
                return
            if archive is None or sidecar is None:
                self._listing = None
                return
            parsed = parse_name(name)
            assert parsed is not None
            updated = dict(listing)  # a new dict: readers may be iterating the old one
            if replaces is not None:
                updated.pop(replaces.identity, None)
            updated[parsed.identity] = RemoteExperiment(name, archive, sidecar)
            self._listing = updated

    def write_sidecar(self, meta: ExpMeta, info: ArchiveInfo, archive_name: str,
                      version: str | None = None) -> ObjectInfo:
        """Store the sidecar for an archive just stored; returns it (its object name, and
        its version when the storage says it)."""
        head = meta.head_dict()
        head["manifest"] = {
            "algorithm": info.manifest.algorithm,
            "digest": info.manifest.digest,
            "count": len(info.manifest.files),
            "total_size": info.manifest.total_size,
        }
        if len(info.manifest.files) <= SIDECAR_FILES:  # so `diff` compares without a download
            head["manifest"]["files"] = {p: list(v) for p, v in sorted(info.manifest.files.items())}
        # Where each member lies, so one file is read with one ranged request (larger
        # archives are read through their central directory).
        members = info.members if len(info.entries) <= SIDECAR_FILES + 1 else None
        data = {
            "format": SIDECAR_FORMAT,
            "name": archive_name[: -len(ARCHIVE_SUFFIX)],
            "run_id": meta.run_id,
            "archive": {"name": archive_name, "size": info.size, "hash": info.hash,
                        "version": version, "algorithm": info.manifest.algorithm,
                        "described": sorted(info.described.items())},
            "meta": head,
        }
        if members:
            data["archive"]["members"] = members
        return self._write_sidecar_data(meta.name[:IDENTITY_LEN], data)

    def _write_sidecar_data(self, identity: str, data: dict[str, Any]) -> ObjectInfo:
        # One line: with an indent, json encodes in Python (~10x slower than without).
        blob = json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
        name = sidecar_name(identity, data["meta"].get("status"))
        stored = self.storage.write_bytes(self.meta_folder, name, blob)
        return stored or ObjectInfo(name, len(blob))

    def _delete_sidecars(self, exp: RemoteExperiment, keep: ObjectInfo | None = None) -> None:
        """Remove the sidecars the listing showed for ``exp`` (but ``keep``); one removed
        meanwhile is no error."""
        names = [*([exp.sidecar.name] if exp.sidecar else []), *exp.stale_sidecars]
        for name in names:
            if keep is None or name != keep.name:
                with contextlib.suppress(StorageNotFound):
                    self.storage.delete(self.meta_folder, name)

    def delete(self, exp: RemoteExperiment) -> None:
        """Remove an experiment's archive, then its sidecar. The identity's claim stays, so
        the identity is never given to another run."""
        self.storage.delete(self.archive_folder, exp.archive.name)
        self._delete_sidecars(exp)
        self._listing = None

    def rename(self, exp: RemoteExperiment, new_name: str) -> None:
        """Change the archive's label; its sidecar (keyed by identity) follows."""
        side = self.paired(exp)
        renamed = self.storage.rename(self.archive_folder, exp.archive.name,
                                      new_name + ARCHIVE_SUFFIX)
        if side is not None:
            side = json.loads(json.dumps(side, default=str))  # (the read one is shared)
            if renamed is None:
                renamed = self.storage.stat(self.archive_folder, new_name + ARCHIVE_SUFFIX)
            side["name"] = new_name
            side["archive"]["name"] = new_name + ARCHIVE_SUFFIX
            side["archive"]["version"] = renamed.version if renamed else None
            side["meta"]["name"] = new_name
            side["meta"]["comment"] = parse_name(new_name).comment  # type: ignore[union-attr]
            written = self._write_sidecar_data(exp.identity, side)
            self._delete_sidecars(exp, keep=written)
        self._listing = None

    # -- files that are not experiments --------------------------------------------------
    @property
    def files_folder(self) -> str:
        return f"{self.project}.resutil-files"

    def put_file(self, name: str, src: Path) -> None:
        """Store a file that is not an experiment (e.g. a workflow engine's sources archive)."""
        self.storage.upload(src, self.files_folder, _plain_name(name))

    def put_bytes(self, name: str, data: bytes) -> None:
        """Store a small file that is not an experiment."""
        self.storage.write_bytes(self.files_folder, _plain_name(name), data)

    def get_file(self, name: str, dest: Path) -> None:
        """Fetch a file stored with ``put_file`` into ``dest``."""
        self.storage.download(self.files_folder, _plain_name(name), dest)

    def get_bytes(self, name: str) -> bytes:
        """The content of a small file stored with ``put_bytes``."""
        return self.storage.read_bytes(self.files_folder, _plain_name(name))

    def file_info(self, name: str) -> ObjectInfo | None:
        """Facts about a file stored with ``put_file``, or None when there is none."""
        return self.storage.stat(self.files_folder, _plain_name(name))

    def delete_file(self, name: str) -> None:
        """Remove a file stored with ``put_file``."""
        self.storage.delete(self.files_folder, _plain_name(name))

    # -- cache --------------------------------------------------------------------------
    def _cache_read(self, key: str) -> dict[str, Any] | None:
        if self.cache_dir is None:
            return None
        try:
            return json.loads((self.cache_dir / key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _cache_write(self, key: str, data: dict[str, Any]) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.cache_dir / key, json.dumps(data, default=str).encode("utf-8"))
        except OSError:
            pass  # a cache is an optimisation


def _plain_name(name: str) -> str:
    """A file name for ``Remote.put_file``: one path part, not hidden."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"not a plain file name: {name!r}")
    return name
