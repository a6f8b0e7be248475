"""The plugin's section of ``resutil-exp.yaml`` (``snakemake:``) and what it says.

    snakemake:
      format: 2
      rule: count                      # the job: rule and wildcards
      wildcards: {sample: a}
      shellcmd: wc -c < ... > ...      # its shell command (a shell rule)
      snakefile: Snakefile             # relative to workdir
      workdir: /home/me/proj
      reproduce: [python, -m, snakemake, ...]   # reruns just this job, from workdir
      inputs:                          # each resutil input query -> the experiment it read
        resutil://aapiyl/a.txt: {name: aapiyl_..._raw, run_id: ...}
      outputs:                         # each stored output -> when, how big, its sha256
        a.tsv: {mtime: 1764600000.25, size: 4, dir: false, sha256: ...}

An output's ``mtime`` is when it was stored: the modification time Snakemake sees wherever
the experiment lives, so rerun decisions do not change when it is pulled or cleaned up.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from resutil.metadata import ExpMeta, walk_files
from resutil.naming import parse_name

RECORD_KEY = "snakemake"
FORMAT = 2  # format 1 (resutil 0.2.0's plugin) recorded no inputs: never reused as current
SHA256_LIMIT = 64 << 20  # larger outputs get no checksum (Snakemake checksums small files)


@dataclass(frozen=True)
class Found:
    """Where a query's file or folder is and what Snakemake needs to know about it."""

    name: str  # the experiment's full name
    folder: Path | None  # its local folder, when it is local
    mtime: float
    size: int  # bytes; 0 for a folder
    footprint: int  # bytes retrieving it takes on disk
    sha256: str | None = None


def section(meta: ExpMeta | None) -> dict[str, Any] | None:
    """The plugin's record of a job experiment (current format), or None."""
    rec = meta.extra.get(RECORD_KEY) if meta is not None else None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        return None
    return rec


def outputs(meta: ExpMeta | None) -> dict[str, dict[str, Any]] | None:
    """The stored outputs of a job experiment, or None for another experiment."""
    rec = section(meta)
    if rec is None:
        return None
    outs = rec.get("outputs")
    return {k: v for k, v in outs.items() if isinstance(v, dict)} if isinstance(outs, dict) else {}


def inputs(meta: ExpMeta | None) -> dict[str, dict[str, Any]]:
    """Input query -> {name, run_id} of the experiment the job read."""
    rec = section(meta)
    ins = rec.get("inputs") if rec else None
    return {k: v for k, v in ins.items() if isinstance(v, dict)} if isinstance(ins, dict) else {}


def output_holding(outs: dict[str, dict[str, Any]] | None, path: str) -> dict[str, Any] | None:
    """The record for ``path``: a stored output, a path inside a stored folder, or a folder
    holding stored outputs."""
    if not outs:
        return None
    if path in outs:
        return outs[path]
    for out, rec in outs.items():
        if rec.get("dir") and path.startswith(out + "/"):
            return {"mtime": rec.get("mtime")}  # inside a stored folder: size unknown
    inner = [rec for out, rec in outs.items() if out.startswith(path + "/")]
    if inner:
        return {"dir": True, "size": 0,
                "mtime": max(_float(r.get("mtime")) for r in inner)}
    return None


def mtime_of(meta: ExpMeta | None, name: str, path: str) -> float:
    """When the output was stored; else when the experiment ended (or started)."""
    rec = output_holding(outputs(meta), path)
    if rec and rec.get("mtime") is not None:
        return _float(rec["mtime"])
    for stamp in (meta.ended_at, meta.started_at) if meta is not None else ():
        if stamp:
            try:
                return datetime.fromisoformat(str(stamp)).timestamp()
            except ValueError:
                pass
    parsed = parse_name(name)
    return parsed.time.timestamp() if parsed else 0.0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def content_sha256(path: Path) -> str | None:
    """The sha256 of a file (or, for a folder, of its files' paths and contents); None when
    it is larger than SHA256_LIMIT."""
    files = list(walk_files(path)) if path.is_dir() else [("", path)]
    if sum(p.stat().st_size for _, p in files) > SHA256_LIMIT:
        return None
    h = hashlib.sha256()
    for rel, p in files:
        if path.is_dir():
            h.update(rel.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for _, p in walk_files(path))


def set_mtime(path: Path, mtime: float) -> None:
    """Give a file, or a folder and everything in it, the modification time ``mtime``."""
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for n in (*dirs, *files):
                os.utime(os.path.join(root, n), (mtime, mtime), follow_symlinks=False)
    os.utime(path, (mtime, mtime))
