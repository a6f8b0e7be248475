"""Gather what the report shows and write it: ``write_report``.

The experiments and their metrics come from ``catalog`` (a remote one's metrics by ranged
reads of its archive); an experiment's files from its folder, or from its archive's member
index when it is only on the remote (``partial``); its code diff from ``compare.code_diff``
against the previous run of the same step, else against its upstream experiment.

Every file of the report is written atomically (a reader sees the old page or the new one),
only the report's own files are written (``index.html``, ``exp/``, ``files/``) and nothing
else in the folder is touched or deleted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ..atomic import write_atomic
from ..catalog import Catalog, Entry, catalog, read_metrics
from ..errors import ResutilError
from ..metadata import EXP_FILE, UNCOMMITTED_DIR
from ..project import Project
from .svg import Node, lineage_svg

IMAGE_SUFFIXES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
                  ".jpeg": "image/jpeg"}
TEXT_SUFFIXES = (".txt", ".log", ".json", ".yaml", ".yml", ".csv", ".tsv", ".md", ".out")
IMAGE_BYTES = 5 << 20  # a bigger image is listed, not copied
TEXT_BYTES = 64 << 10  # a bigger text file is listed, not shown
MAX_IMAGES = 24  # per experiment
MAX_TEXTS = 12
MAX_FILES = 1000  # files listed per experiment
MAX_METRIC_COLUMNS = 40
DIFF_CHARS = 256 << 10  # a longer code diff is cut
READERS = 8  # experiments gathered side by side when there are remote reads or git diffs
FIXED_COLUMNS = ("Experiment", "Step", "Status", "Where", "Started")  # then the metrics
log = logging.getLogger(__name__)


@dataclass
class Report:
    """What ``write_report`` wrote: the index page, how many experiment pages and copied
    files, warnings (one line each), and the seconds it took."""

    index: Path
    experiments: int
    files: int
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def write_report(project: Project, out_dir: Path, names: list[str] | tuple[str, ...] = (),
                 remote: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> Report:
    """Write the static HTML report of the experiments ``names`` resolve to (all when
    empty) into ``out_dir`` (anywhere but the results folder); ``progress(done, total)``
    is called as experiment pages are written."""
    from .render import Renderer

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    refuse_inside_results(project, out_dir)
    full = catalog(project, remote=remote, metrics=False)
    chosen = _choose(project, full, names)
    warnings = list(full.warnings)
    warnings += read_metrics(project, chosen)
    shown = Catalog(chosen, [], full.remote)
    renderer = Renderer()
    for sub in ("exp", "files"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)

    ctx = _Context(project, out_dir, full, {e.identity for e in chosen})
    pages = 0
    copied = 0
    slow = any(not e.local for e in chosen) or ctx.git_top is not None
    if slow and len(chosen) > 1:
        with ThreadPoolExecutor(READERS) as pool:
            gathered = pool.map(ctx.page, chosen)
            for page in gathered:
                copied += _write_page(renderer, out_dir, page)
                pages += 1
                if progress:
                    progress(pages, len(chosen))
    else:
        for entry in chosen:
            copied += _write_page(renderer, out_dir, ctx.page(entry))
            pages += 1
            if progress:
                progress(pages, len(chosen))
    warnings += ctx.warnings

    columns = shown.metric_columns()
    if len(columns) > MAX_METRIC_COLUMNS:
        warnings.append(f"{len(columns)} metric columns: the index shows the "
                        f"{MAX_METRIC_COLUMNS} most widely reported (each page shows all)")
        columns = columns[:MAX_METRIC_COLUMNS]
    svg = lineage_svg(*_graph(chosen, ctx.href))
    index = out_dir / "index.html"
    write_atomic(index, renderer.index(
        project=project.config.project_name, rows=[_row(e, columns) for e in reversed(chosen)],
        head=[{"name": c, "numeric": False} for c in FIXED_COLUMNS]
        + [{"name": c, "numeric": True} for c in columns], svg=svg, remote=full.remote, warnings=warnings,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M:%S"), count=len(chosen),
        total=len(full.entries)))
    return Report(index, pages, copied, warnings, time.perf_counter() - t0)


def refuse_inside_results(project: Project, out_dir: Path) -> None:
    """ResutilError when ``out_dir`` is the results folder or inside it: a report there
    would be taken for an experiment (or written into one)."""
    from ..partial import inside_results

    if inside_results(project, out_dir):
        raise ResutilError(f"{out_dir} is inside the results folder {project.workspace.root}, "
                           "where only experiments belong; choose another folder with -o")


def write_changed(path: Path, data: bytes) -> None:
    """``write_atomic`` unless the file holds these bytes already: a second report rewrites
    only what changed (a rename costs more than a read, and a synced share sees less)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data)


# -- gathering ---------------------------------------------------------------------------------
def _choose(project: Project, full: Catalog, names: list[str] | tuple[str, ...]) -> list[Entry]:
    if not names:
        return list(full.entries)
    from ..naming import identity_of

    wanted = {identity_of(project.resolve(n, remote=full.remote == "listed")) for n in names}
    return [e for e in full.entries if e.identity in wanted]


class _Context:
    """What every page needs: the whole catalog (for links, upstream and previous runs)."""

    def __init__(self, project: Project, out_dir: Path, full: Catalog, chosen: set[str]):
        from .. import git

        self.project = project
        self.out_dir = out_dir
        self.by_identity = full.by_identity()
        self.chosen = chosen
        self.warnings: list[str] = []
        self.git_top = git.toplevel(project.config.root)
        self.previous: dict[str, Entry] = {}  # identity -> the run of its step before it
        last: dict[str, Entry] = {}
        for e in full.entries:  # oldest first
            if e.step:
                if e.step in last:
                    self.previous[e.identity] = last[e.step]
                last[e.step] = e

    def href(self, identity: str, up: str = "") -> str | None:
        """The link to an experiment's page (from ``up``), if it is in the report."""
        return f"{up}exp/{identity}.html" if identity in self.chosen else None

    def page(self, e: Entry) -> dict[str, Any]:
        """Everything the experiment page shows, as plain data for the template."""
        meta = e.meta
        files, images, texts = self._files(e)
        return {
            "e": e, "identity": e.identity, "name": e.name, "comment": e.comment,
            "status": e.status, "where": e.where, "date": e.date, "step": e.step,
            "problem": e.problem, "meta": meta,
            "argv": _argv(meta), "params": _params(meta),
            "metrics": [(k, _fmt(v)) for k, v in sorted(e.metrics.items())],
            "upstream": self._links(meta.dependencies if meta else [], by_dep=True),
            "downstream": self._links(e.downstream),
            "code": self._code(e),
            "files": files, "more_files": max(0, len(files) - MAX_FILES) if files else 0,
            "images": images, "texts": texts,
        }

    def _links(self, items: list[Any], by_dep: bool = False) -> list[dict[str, Any]]:
        from ..naming import identity_of

        out = []
        for item in items:
            name = item.name if by_dep else item
            ident = identity_of(name)
            known = self.by_identity.get(ident)
            out.append({"name": known.name if known else name,
                        "href": self.href(ident, "../"), "known": known is not None,
                        "source": item.source if by_dep else None})
        return out

    # files, images, small text results ---------------------------------------------------
    def _files(self, e: Entry) -> tuple[list[tuple[str, int]], list[dict[str, Any]],
                                        list[dict[str, Any]]]:
        from ..partial import Source, find_source, open_from

        source: Source | None = None
        try:
            if e.local:
                from ..metadata import iter_files

                folder = self.project.workspace.path(e.name)
                files = [(rel, st.st_size) for rel, _, st in iter_files(folder)]
                source = Source(e.name, folder, None)
            elif e.remote:
                source = find_source(self.project, e.name)
                assert source.index is not None
                files = sorted((rel, m.usize) for rel, m in source.index.members.items()
                               if not rel.endswith("/"))
            else:
                return [], [], []
        except (ResutilError, OSError) as err:
            self.warnings.append(f"files of {e.name} could not be listed: {err}")
            return [], [], []
        images: list[dict[str, Any]] = []
        texts: list[dict[str, Any]] = []
        for rel, size in files:
            if rel == EXP_FILE or rel.startswith(UNCOMMITTED_DIR + "/"):
                continue
            suffix = PurePosixPath(rel).suffix.lower()
            if suffix in IMAGE_SUFFIXES and len(images) < MAX_IMAGES:
                if size > IMAGE_BYTES:
                    images.append({"path": rel, "size": size, "src": None})
                    continue
                data = self._read(open_from, source, e, rel, IMAGE_BYTES)
                if data is None:
                    continue
                dest = Path("files", e.identity, *PurePosixPath(rel).parts)
                target = self.out_dir / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                write_changed(target, data)
                images.append({"path": rel, "size": size,
                               "src": "../" + quote(dest.as_posix())})
            elif suffix in TEXT_SUFFIXES and size <= TEXT_BYTES and len(texts) < MAX_TEXTS:
                data = self._read(open_from, source, e, rel, TEXT_BYTES)
                if data is None:
                    continue
                try:
                    texts.append({"path": rel, "text": data.decode("utf-8")})
                except UnicodeDecodeError:
                    continue
        return files, images, texts

    def _read(self, open_from: Any, source: Any, e: Entry, rel: str, limit: int) -> bytes | None:
        try:
            with open_from(self.project, source, rel) as f:
                data = f.read(limit + 1)
        except (ResutilError, OSError) as err:
            self.warnings.append(f"{rel} of {e.name} could not be read: {err}")
            return None
        return data if len(data) <= limit else None

    # the code diff ---------------------------------------------------------------------
    def _code(self, e: Entry) -> dict[str, Any]:
        """The code diff against the previous run of the same step, else the first upstream
        experiment with a recorded commit."""
        basis, why = self.previous.get(e.identity), "the previous run of step"
        if basis is not None:
            why = f"{why} {e.step}"
        elif e.meta is not None:
            for dep in e.meta.dependencies:
                up = self.by_identity.get(dep.identity)
                if up is not None and up.meta is not None and up.meta.commit_hash:
                    basis, why = up, "its upstream experiment"
                    break
        out: dict[str, Any] = {"basis": None, "why": why, "text": "", "lines": [], "notes": [],
                               "files": [], "same": False}
        if basis is None or basis.meta is None or e.meta is None:
            out["notes"].append("nothing to compare with: no earlier run of the same step and "
                                "no upstream experiment with a recorded commit")
            return out
        out["basis"] = {"name": basis.name, "href": self.href(basis.identity, "../"),
                        "commit": basis.meta.commit_hash, "known": True}
        a, b = basis.meta, e.meta
        overlays = a.uncommitted_files or a.untracked_files or b.uncommitted_files \
            or b.untracked_files
        if a.commit_hash is None or b.commit_hash is None:
            which = " and ".join(x.name for x, m in ((basis, a), (e, b)) if m.commit_hash is None)
            out["notes"].append(f"{which} recorded no git commit: the code cannot be compared")
            return out
        if a.commit_hash == b.commit_hash and not overlays:
            out["same"] = True  # the same commit, nothing uncommitted: no git call needed
            return out
        if self.git_top is None:
            out["notes"].append("not in a git repository: the code cannot be compared")
            return out
        from ..compare import code_diff

        found = code_diff(self.project, self._side(basis), self._side(e))
        text = found.text
        if len(text) > DIFF_CHARS:
            text = text[:DIFF_CHARS]
            found.notes.append(f"the diff is cut after {DIFF_CHARS // 1024} KB")
        out.update(text=text, notes=found.notes, files=found.files,
                   same=not found.text and not found.files and not found.notes,
                   lines=[(_diff_class(ln), ln) for ln in text.splitlines()])
        return out

    def _side(self, e: Entry) -> Any:
        from ..compare import Side

        folder = self.project.workspace.path(e.name) if e.local else None
        assert e.meta is not None
        return Side(e.name, e.meta, folder)


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    return {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "")


def _argv(meta: Any) -> list[str]:
    if meta is None:
        return []
    from ..compare import argv_of

    return argv_of(meta)


def _params(meta: Any) -> list[tuple[str, str]]:
    step = meta.pipeline if meta is not None and isinstance(meta.pipeline, dict) else {}
    params = step.get("params")
    return sorted((str(k), str(v)) for k, v in params.items()) if isinstance(params, dict) else []


def _fmt(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.6g}"


def _row(e: Entry, columns: list[str]) -> dict[str, Any]:
    return {"identity": e.identity, "name": e.name, "comment": e.comment, "step": e.step,
            "status": e.status, "where": e.where, "date": e.date.replace("T", " ")[:19],
            "metrics": [(_fmt(e.metrics[c]), repr(e.metrics[c])) if c in e.metrics
                        and math.isfinite(e.metrics[c]) else ("", "") for c in columns]}


def _graph(chosen: list[Entry], href: Callable[[str], str | None]
           ) -> tuple[list[Node], list[tuple[str, str]]]:
    from ..naming import identity_of

    nodes = [Node(e.identity, href(e.identity) or "#", e.name, e.name,
                  " · ".join(x for x in (e.step, e.status, e.where) if x),
                  "st-" + "".join(c for c in e.status if c.isalpha())) for e in chosen]
    keys = {e.identity for e in chosen}
    edges = []
    for e in chosen:
        for up in e.upstream:
            ident = identity_of(up)
            if ident in keys:
                edges.append((ident, e.identity))
    return nodes, edges


def _write_page(renderer: Any, out_dir: Path, page: dict[str, Any]) -> int:
    write_changed(out_dir / "exp" / f"{page['identity']}.html", renderer.experiment(**page))
    return sum(1 for i in page["images"] if i["src"])
