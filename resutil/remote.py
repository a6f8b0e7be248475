"""A project's experiments on a storage, in the 0.1.x layout.

    <root>/<project>/<name>.zip               the archive (0.1.x reads exactly this)
    <root>/<project>.resutil/<identity>.json  a sidecar: metadata and the archive's hash

The sidecar folder sits beside the project folder, not in it, so a 0.1.x client listing
``<project>/`` sees no extra entries. Archives without a sidecar (pushed by 0.1.x) are
read by fetching their metadata once and caching it.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archive import DEFAULT_DEFLATE_LIMIT, ArchiveInfo, build_archive
from .errors import ArchiveError, ExperimentError, ExperimentNotFound
from .metadata import EXP_FILE, ExpMeta, Manifest, parse_meta, read_meta, write_meta
from .naming import parse_name
from .progress import NO_PROGRESS, Callback
from .storage.base import ObjectInfo, Storage

ARCHIVE_SUFFIX = ".zip"
SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = 1


@dataclass(frozen=True)
class RemoteExperiment:
    """One experiment on the remote: its archive and, if present, its sidecar."""

    name: str
    archive: ObjectInfo
    sidecar: ObjectInfo | None = None

    @property
    def identity(self) -> str:
        return self.name[:22]


class Remote:
    """Push, pull and inspect one project's experiments on a storage."""

    def __init__(self, storage: Storage, project: str, cache_dir: Path | None = None) -> None:
        self.storage = storage
        self.project = project
        self.archive_folder = project
        self.meta_folder = f"{project}.resutil"
        self.cache_dir = cache_dir
        self._listing: dict[str, RemoteExperiment] | None = None

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
            sidecars = {
                o.name[: -len(SIDECAR_SUFFIX)]: o
                for o in side_listing.result()
                if o.name.endswith(SIDECAR_SUFFIX)
            }
        found: dict[str, RemoteExperiment] = {}
        for obj in archives:
            if not obj.name.endswith(ARCHIVE_SUFFIX):
                continue
            parsed = parse_name(obj.name[: -len(ARCHIVE_SUFFIX)])
            if not parsed:
                continue
            prev = found.get(parsed.identity)
            # Two archives of one identity only after an interrupted rename: newest wins.
            if prev and (prev.archive.mtime or 0) >= (obj.mtime or 0):
                continue
            found[parsed.identity] = RemoteExperiment(
                parsed.name, obj, sidecars.get(parsed.identity)
            )
        self._listing = found
        return found

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
        """The sidecar content, from the local cache when it is current.

        With ``fetch=False`` only the cache is consulted (listing stays one request).
        """
        if exp.sidecar is None:
            return None
        key = f"{exp.identity}-{exp.sidecar.size}-{int(exp.sidecar.mtime or 0)}.json"
        cached = self._cache_read(key)
        if cached is not None or not fetch:
            return cached
        try:
            data = json.loads(self.storage.read_bytes(self.meta_folder, exp.sidecar.name))
        except ValueError:
            return None  # a damaged sidecar: fall back to the archive
        self._cache_write(key, data)
        return data

    def meta(self, exp: RemoteExperiment) -> ExpMeta:
        """The experiment's metadata without its manifest, fetching an archive only once."""
        side = self.sidecar(exp)
        if side is not None and isinstance(side.get("meta"), dict):
            meta = ExpMeta.from_dict(side["meta"])
            meta.set_name(exp.name)
            return meta
        key = f"{exp.identity}-archive-{exp.archive.size}-{int(exp.archive.mtime or 0)}.json"
        cached = self._cache_read(key)
        if cached is None:
            cached = {"meta": self._meta_from_archive(exp).head_dict()}
            self._cache_write(key, cached)
        meta = ExpMeta.from_dict(cached["meta"])
        meta.set_name(exp.name)
        return meta

    def _meta_from_archive(self, exp: RemoteExperiment) -> ExpMeta:
        with self.storage.fetched(self.archive_folder, exp.archive.name) as path:
            try:
                with zipfile.ZipFile(path) as zf:
                    text = zf.read(EXP_FILE).decode("utf-8")
            except KeyError:
                return ExpMeta(name=exp.name)
            except (zipfile.BadZipFile, OSError) as e:
                raise ArchiveError(f"{exp.archive.name} on the remote is not a readable zip ({e})") from None
        return parse_meta(text, with_manifest=False)

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
        side = self.sidecar(exp)
        archive = (side or {}).get("archive") or {}
        if archive.get("name") == exp.archive.name and archive.get("size") == exp.archive.size:
            return archive
        return {}  # no sidecar, or one that describes an older archive

    # -- transfers ----------------------------------------------------------------------
    def push(
        self,
        folder: Path,
        callback: Callback = NO_PROGRESS,
    ) -> ArchiveInfo:
        """Archive a local experiment folder and store it, with its sidecar.

        The archive goes first and appears all at once; the sidecar follows. The local
        metadata gets the manifest computed while archiving. Large compressible files are
        deflated only for remote storage: a local folder or NAS has disk to spare and no
        bandwidth to save, so there CPU time is the cost that counts.
        """
        deflate_limit = DEFAULT_DEFLATE_LIMIT if self.storage.writes_in_place else None
        name = folder.name
        meta = read_meta(folder, with_manifest=False)
        old = self.get(name)
        if old is not None:
            self._refuse_other_run(meta, old)

        def finish(manifest: Manifest) -> bytes:
            meta.manifest = manifest
            return write_meta(folder, meta)

        archive_name = name + ARCHIVE_SUFFIX
        # Progress counts bytes once: while archiving when that writes to the storage
        # itself (local folder), else while uploading the finished archive.
        build_cb = callback if self.storage.writes_in_place else NO_PROGRESS
        with self.storage.staged_upload(self.archive_folder, archive_name, callback) as staged:
            with open(staged.path, "wb") as out:
                # No fsync: the rename makes the archive appear whole to every process; after
                # a power cut a torn archive fails its recorded hash on pull and verify.
                info = build_archive(folder, out, finish, build_cb, deflate_limit,
                                     self.storage.settings.scratch_dir)
        self.write_sidecar(meta, info, archive_name)
        if old is not None and old.name != name:  # renamed elsewhere: drop the old label
            self.storage.delete(self.archive_folder, old.archive.name)
        self._listing = None
        return info

    def _refuse_other_run(self, meta: ExpMeta, old: RemoteExperiment) -> None:
        """Never replace (or drop the label of) a different run that has the same identity.

        Identities are times to the second, so two machines can make the same one. A
        relabel, a checkpoint or a pulled copy keeps its start time and host; another
        run of the same second does not.
        """
        side = self.sidecar(old) or {}
        theirs = side.get("meta") if isinstance(side.get("meta"), dict) else {}
        mine = (meta.started_at, (meta.environment or {}).get("host"))
        other = (theirs.get("started_at"), (theirs.get("environment") or {}).get("host"))
        if None in mine or None in other or mine == other:
            return
        raise ExperimentError(
            f"the remote already holds {old.name}, a different run with the same identity "
            f"(started {other[0]} on {other[1]}); {meta.name} was not pushed - give it a new "
            "identity (move the folder to a new <prefix>_<timestamp> name) and push again"
        )

    def write_sidecar(self, meta: ExpMeta, info: ArchiveInfo, archive_name: str) -> None:
        head = meta.head_dict()
        head["manifest"] = {
            "algorithm": info.manifest.algorithm,
            "digest": info.manifest.digest,
            "count": len(info.manifest.files),
            "total_size": info.manifest.total_size,
        }
        data = {
            "format": SIDECAR_FORMAT,
            "name": archive_name[: -len(ARCHIVE_SUFFIX)],
            "archive": {"name": archive_name, "size": info.size, "hash": info.hash,
                        "algorithm": info.manifest.algorithm,
                        "described": sorted(info.described.items())},
            "meta": head,
        }
        blob = json.dumps(data, ensure_ascii=False, indent=1, default=str).encode("utf-8")
        self.storage.write_bytes(self.meta_folder, meta.name[:22] + SIDECAR_SUFFIX, blob)

    def delete(self, exp: RemoteExperiment) -> None:
        """Remove an experiment's archive, then its sidecar."""
        self.storage.delete(self.archive_folder, exp.archive.name)
        if exp.sidecar is not None:
            self.storage.delete(self.meta_folder, exp.sidecar.name)
        self._listing = None

    def rename(self, exp: RemoteExperiment, new_name: str) -> None:
        """Change the archive's label; the sidecar (keyed by identity) is updated after."""
        self.storage.rename(self.archive_folder, exp.archive.name, new_name + ARCHIVE_SUFFIX)
        side = self.sidecar(exp)
        if side is not None:
            side["name"] = new_name
            side.setdefault("archive", {})["name"] = new_name + ARCHIVE_SUFFIX
            side.setdefault("meta", {})["name"] = new_name
            side["meta"]["comment"] = parse_name(new_name).comment  # type: ignore[union-attr]
            blob = json.dumps(side, ensure_ascii=False, indent=1, default=str).encode("utf-8")
            self.storage.write_bytes(self.meta_folder, exp.sidecar.name, blob)  # type: ignore[union-attr]
        self._listing = None

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
            tmp = self.cache_dir / f".{key}.{os.getpid()}"
            tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
            os.replace(tmp, self.cache_dir / key)
        except OSError:
            pass  # a cache is an optimisation
