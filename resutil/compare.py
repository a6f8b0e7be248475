"""What differs between two experiments: files, numbers, code, arguments, environment.

``compare_files`` sets two manifests side by side (``reproduce`` judges a rerun with it);
``diff_experiments`` is ``resutil diff A B``: metadata, arguments and params, environment,
upstream experiments, the code (a unified diff between the two runs' sources: their
commits plus their copies of uncommitted and untracked files, read from git and the
experiment folders, with no checkout), files, and the numbers of small result files.
Everything comes from metadata where it can: a remote-only experiment is compared from its
sidecar (which lists its files), with no download.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import io
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import git
from .metadata import UNCOMMITTED_DIR, ExpMeta, Manifest, compute_manifest
from .naming import parse_name
from .project import Project

SAME, CHANGED, REMOVED, ADDED = "same", "changed", "removed", "added"
TEXT_DIFF_BYTES = 64 << 10  # a changed text file up to this size gets a short diff
TEXT_DIFF_LINES = 20
TEXT_DIFF_WIDTH = 160  # a longer line (an SVG path, minified JSON) is cut
NUMBERS_BYTES = 1 << 20  # JSON/YAML/CSV files up to this size have their numbers compared
NUMBERS_SUFFIXES = (".json", ".yaml", ".yml", ".csv", ".tsv")
MAX_NUMBERS = 200  # per file
# resutil's own records of a run: they name the run's folder and times, so they differ in
# every rerun; reported, never counted against a reproduction.
RUN_LOGS = ("resutil-step.log", "resutil-stdout.log", "resutil-stderr.log")


# -- files -------------------------------------------------------------------------------------
@dataclass
class FileChange:
    """One path in two manifests: same, changed, removed (only in A), added (only in B)."""

    path: str
    state: str
    a: tuple[int, str] | None = None  # (size, content hash) in A
    b: tuple[int, str] | None = None
    ignored: bool = False  # matches an ignore glob: reported, not counted
    diff: list[str] = field(default_factory=list)  # a short unified diff (small text files)


@dataclass
class FileComparison:
    """Every path of two manifests, by path."""

    files: list[FileChange] = field(default_factory=list)

    def counted(self) -> list[FileChange]:
        return [f for f in self.files if not f.ignored]

    def count(self, state: str) -> int:
        return sum(1 for f in self.counted() if f.state == state)

    @property
    def identical(self) -> bool:
        """Every file that counts is the same, byte for byte."""
        return all(f.state == SAME for f in self.counted())


def compare_files(a: Manifest, b: Manifest, ignore: Iterable[str] = (),
                  folders: tuple[Path | None, Path | None] = (None, None)) -> FileComparison:
    """Two manifests side by side. Paths matching an ``ignore`` glob are marked ignored;
    with both ``folders`` at hand, a changed small text file gets a short diff."""
    globs = list(ignore)
    out = FileComparison()
    for path in sorted(set(a.files) | set(b.files)):
        fa, fb = a.files.get(path), b.files.get(path)
        if fa is None:
            state = ADDED
        elif fb is None:
            state = REMOVED
        else:
            state = SAME if fa == fb else CHANGED
        change = FileChange(path, state, fa, fb, any(fnmatch.fnmatch(path, g) for g in globs))
        if state == CHANGED and None not in folders:
            change.diff = text_diff(folders[0] / path, folders[1], path)  # type: ignore[operator]
        out.files.append(change)
    return out


def _text(path: Path, limit: int = TEXT_DIFF_BYTES) -> str | None:
    """A small file's text, or None when it is large, binary or unreadable."""
    try:
        if path.stat().st_size > limit:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_diff(a: Path, b_folder: Path, rel: str, lines: int = TEXT_DIFF_LINES) -> list[str]:
    """The first lines of a unified diff between two small text files ([] if either is
    not one)."""
    ta, tb = _text(a), _text(b_folder / rel)
    if ta is None or tb is None:
        return []
    out = [ln if len(ln) <= TEXT_DIFF_WIDTH else ln[:TEXT_DIFF_WIDTH] + " ..."
           for ln in _unified(ta, tb, rel)]
    return out[:lines] + ([f"... ({len(out) - lines} more lines)"] if len(out) > lines else [])


def _unified(ta: str, tb: str, rel: str) -> list[str]:
    return [ln.rstrip("\n") for ln in difflib.unified_diff(
        ta.splitlines(keepends=True), tb.splitlines(keepends=True),
        fromfile=f"a/{rel}", tofile=f"b/{rel}", n=1)]


# -- numbers -----------------------------------------------------------------------------------
@dataclass
class NumberChange:
    key: str
    a: float | None
    b: float | None

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass
class FileNumbers:
    """The numbers of one small result file (JSON, YAML, CSV) in A and B."""

    path: str
    numbers: list[NumberChange] = field(default_factory=list)
    truncated: bool = False


def numbers_in(path: Path) -> dict[str, float] | None:
    """The numbers a small JSON/YAML/CSV file holds, by key (``a.b``, ``col[row]``); None
    when it is not such a file or cannot be read."""
    if path.suffix.lower() not in NUMBERS_SUFFIXES:
        return None
    text = _text(path, NUMBERS_BYTES)
    return None if text is None else numbers_of(text, path.suffix)


def numbers_of(text: str, suffix: str) -> dict[str, float] | None:
    """The numbers in the text of a JSON/YAML/CSV/TSV file (by ``suffix``), by key; None
    when it cannot be parsed as one."""
    suffix = suffix.lower()
    try:
        if suffix == ".json":
            return _flatten(json.loads(text))
        if suffix in (".yaml", ".yml"):
            import yaml

            return _flatten(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        return _table(text, "\t" if suffix == ".tsv" else ",")
    except Exception:  # noqa: BLE001 - a result file may hold anything
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
        return f
    return None


def _flatten(data: Any, prefix: str = "", out: dict[str, float] | None = None,
             depth: int = 0) -> dict[str, float]:
    out = {} if out is None else out
    if depth > 20 or len(out) > 10 * MAX_NUMBERS:
        return out
    if isinstance(data, dict):
        for k, v in data.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _flatten(v, f"{prefix}[{i}]", out, depth + 1)
    elif not isinstance(data, str):
        n = _number(data)
        if n is not None:
            out[prefix or "value"] = n
    return out


def _table(text: str, delimiter: str) -> dict[str, float]:
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    rows = [r for r in rows if r]
    if not rows:
        return {}
    header = rows[0]
    has_header = any(_number(c) is None for c in header)
    body = rows[1:] if has_header else rows
    out: dict[str, float] = {}
    for i, row in enumerate(body):
        for j, cell in enumerate(row):
            n = _number(cell)
            if n is None:
                continue
            col = header[j] if has_header and j < len(header) else f"col{j}"
            out[col if len(body) == 1 else f"{col}[{i}]"] = n
            if len(out) > 10 * MAX_NUMBERS:
                return out
    return out


def compare_numbers(a: Path, b: Path, rel: str) -> FileNumbers | None:
    """The numbers of one file in A and B side by side (None if it holds none)."""
    na, nb = numbers_in(a), numbers_in(b)
    if na is None or nb is None or not (na or nb):
        return None
    keys = list(dict.fromkeys([*na, *nb]))
    out = FileNumbers(rel, truncated=len(keys) > MAX_NUMBERS)
    out.numbers = [NumberChange(k, na.get(k), nb.get(k)) for k in keys[:MAX_NUMBERS]]
    return out


def same_number(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


# -- code --------------------------------------------------------------------------------------
@dataclass
class CodeDiff:
    """The code of two runs: commits, and the unified diff of their sources."""

    commit_a: str | None = None
    commit_b: str | None = None
    text: str = ""  # unified diff; "" when the sources are the same
    files: list[str] = field(default_factory=list)  # the paths that differ
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why


def code_diff(project: Project, a: Side, b: Side) -> CodeDiff:
    """The unified diff from A's sources to B's: git between their commits, then each
    path either run had uncommitted or untracked, from its copy in the experiment folder."""
    out = CodeDiff(a.meta.commit_hash, b.meta.commit_hash)
    top = git.toplevel(project.config.root)
    ca, cb = out.commit_a, out.commit_b
    if ca is None or cb is None:
        which = " and ".join(s.name for s, c in ((a, ca), (b, cb)) if c is None)
        out.notes.append(f"{which} recorded no git commit: the code cannot be compared")
        return out
    if top is None:
        out.notes.append("not in a git repository: the code cannot be compared")
        return out
    lacking = [c for c in dict.fromkeys((ca, cb)) if not git.has_commit(top, c)]
    if lacking:
        out.notes.append(f"commit {lacking[0][:10]} is not in this repository: 'git fetch' "
                         "it to see the code diff")
        return out
    overlaid = sorted({*a.overlay, *b.overlay})
    parts = []
    if ca != cb:
        base = git.diff(top, ca, cb, overlaid)
        if base is None:
            out.notes.append("git diff failed: the code cannot be compared")
            return out
        parts.append(base)
        out.files += [p for p in git.changed_between(top, ca, cb) if p not in overlaid]
    for rel in overlaid:
        text_a, why_a = a.source(top, rel)
        text_b, why_b = b.source(top, rel)
        if why_a or why_b:
            if a.hash_of(rel) is not None and a.hash_of(rel) == b.hash_of(rel):
                continue  # both copies recorded with the same content
            out.notes.append(why_a or why_b)  # type: ignore[arg-type]
            out.files.append(rel)
            continue
        if text_a == text_b:
            continue
        out.files.append(rel)
        if text_a is not None and b"\0" in text_a or text_b is not None and b"\0" in text_b:
            parts.append(f"Binary files a/{rel} and b/{rel} differ\n")
            continue
        lines = difflib.unified_diff(
            _decode(text_a).splitlines(keepends=True), _decode(text_b).splitlines(keepends=True),
            fromfile=f"a/{rel}" if text_a is not None else "/dev/null",
            tofile=f"b/{rel}" if text_b is not None else "/dev/null")
        parts.append("".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines))
    out.text = "".join(parts)
    out.files = sorted(set(out.files))
    return out


def _decode(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", "replace")


# -- two experiments ---------------------------------------------------------------------------
@dataclass
class Side:
    """One of the two experiments: its metadata, and its folder when it is local."""

    name: str
    meta: ExpMeta
    folder: Path | None  # None: remote only

    @property
    def where(self) -> str:
        return "local" if self.folder is not None else "remote"

    @property
    def overlay(self) -> list[str]:
        """The files this run used that its commit does not hold as they were."""
        return [*self.meta.uncommitted_files, *self.meta.untracked_files]

    def hash_of(self, rel: str) -> str | None:
        man = self.meta.manifest
        entry = man.files.get(f"{UNCOMMITTED_DIR}/{rel}") if man else None
        return entry[1] if entry else None

    def source(self, top: Path, rel: str) -> tuple[bytes | None, str | None]:
        """(content of ``rel`` as this run had it or None if it had none, why it cannot be
        told)."""
        if rel in self.overlay:
            if self.folder is None:
                return None, (f"{rel} was uncommitted in {self.name}, which is only on the "
                              "remote: pull it to see that part of the diff")
            try:
                return (self.folder / UNCOMMITTED_DIR / rel).read_bytes(), None
            except OSError:
                return None, f"{self.name} has no copy of its uncommitted {rel}"
        return git.show(top, self.meta.commit_hash or "HEAD", rel), None


def load_side(project: Project, query: str) -> Side:
    """An experiment for comparing: local (with its manifest) or, failing that, remote."""
    found = project.locate(query, with_manifest=True)
    if found.folder is not None and found.meta.manifest is None:  # running, or 0.1.x's
        found.meta.manifest = compute_manifest(found.folder)
    return Side(found.name, found.meta, found.folder)


@dataclass
class ExperimentDiff:
    """``resutil diff A B``: each section lists only what differs."""

    a: dict[str, Any]
    b: dict[str, Any]
    fields: list[tuple[str, Any, Any]] = field(default_factory=list)
    arguments: list[tuple[str, Any, Any]] = field(default_factory=list)
    params: list[tuple[str, Any, Any]] = field(default_factory=list)
    environment: list[tuple[str, Any, Any]] = field(default_factory=list)
    packages: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    upstream: list[dict[str, Any]] = field(default_factory=list)
    code: CodeDiff = field(default_factory=CodeDiff)
    files: FileComparison | None = None
    files_note: str | None = None
    numbers: list[FileNumbers] = field(default_factory=list)
    numbers_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["code"]["same"] = not self.code.text and not self.code.files and not self.code.notes
        if self.files is not None:
            d["files"] = [{"path": f.path, "state": f.state,
                           "a": list(f.a) if f.a else None, "b": list(f.b) if f.b else None,
                           "diff": f.diff} for f in self.files.files]
        for key in ("fields", "arguments", "params", "environment"):
            d[key] = [{"key": k, "a": va, "b": vb} for k, va, vb in getattr(self, key)]
        d["packages"] = [{"name": k, "a": va, "b": vb} for k, va, vb in self.packages]
        d["numbers"] = [{"path": f.path, "truncated": f.truncated, "numbers": [
            {"key": n.key, "a": n.a, "b": n.b, "change": n.change} for n in f.numbers]}
            for f in self.numbers]
        return d


def diff_experiments(project: Project, query_a: str, query_b: str) -> ExperimentDiff:
    """Everything that differs between two experiments (see the module doc)."""
    a, b = load_side(project, query_a), load_side(project, query_b)
    ma, mb = a.meta, b.meta
    out = ExperimentDiff(_summary(a), _summary(b))
    for key, va, vb in (
        ("status", ma.status, mb.status),
        ("comment", ma.comment, mb.comment),
        ("commit", ma.commit_hash, mb.commit_hash),
        ("uncommitted", ma.uncommitted_files, mb.uncommitted_files),
        ("untracked", ma.untracked_files, mb.untracked_files),
        ("pipeline step", _step(ma).get("step"), _step(mb).get("step")),
        ("reproduces", _reproduces(ma), _reproduces(mb)),
    ):
        if va != vb:
            out.fields.append((key, va, vb))
    out.arguments = _arguments(ma, mb)
    out.params = _changed(_step(ma).get("params") or {}, _step(mb).get("params") or {})
    ea, eb = ma.environment or {}, mb.environment or {}
    for key in ("python", "platform", "machine", "host", "resutil"):
        if ea.get(key) != eb.get(key):
            out.environment.append((key, ea.get(key), eb.get(key)))
    pa, pb = ea.get("packages") or {}, eb.get("packages") or {}
    if isinstance(pa, dict) and isinstance(pb, dict):
        out.packages = [(k, pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb), key=str.lower)
                        if pa.get(k) != pb.get(k)]
    out.upstream = _upstream(ma, mb)
    out.code = code_diff(project, a, b)
    if ma.manifest is None or mb.manifest is None:
        missing = a if ma.manifest is None else b
        out.files_note = (f"{missing.name} is only on the remote and its sidecar lists no files "
                          "(pushed by an earlier resutil): pull it to compare files")
    else:
        out.files = compare_files(ma.manifest, mb.manifest, folders=(a.folder, b.folder))
        if a.folder is None or b.folder is None:
            out.numbers_note = "numbers are compared for local experiments: pull to see them"
        else:
            for f in out.files.files:
                if f.state == CHANGED and not f.path.startswith(UNCOMMITTED_DIR + "/"):
                    found = compare_numbers(a.folder / f.path, b.folder / f.path, f.path)
                    if found is not None:
                        out.numbers.append(found)
                        f.diff = []  # its numbers say it better
    return out


def _summary(side: Side) -> dict[str, Any]:
    m = side.meta
    return {"name": side.name, "where": side.where, "run_id": m.run_id, "status": m.status,
            "started_at": m.started_at, "commit": m.commit_hash}


def _step(meta: ExpMeta) -> dict[str, Any]:
    return meta.pipeline if isinstance(meta.pipeline, dict) else {}


def _reproduces(meta: ExpMeta) -> Any:
    rep = meta.extra.get("reproduces")
    return rep.get("name") if isinstance(rep, dict) else rep


def _changed(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b), key=str)
            if (k in a) != (k in b) or a.get(k) != b.get(k)]


def argv_of(meta: ExpMeta) -> list[str]:
    """A run's command line as a list (``argv``; else ``args`` split, as 0.1.x wrote it)."""
    if meta.argv is not None:
        return list(meta.argv)
    import shlex

    try:
        return shlex.split(meta.args)
    except ValueError:
        return meta.args.split()


def options(argv: list[str]) -> dict[str, str]:
    """``--name value`` / ``--name=value`` / flags / positionals of a command line, by key."""
    out: dict[str, str] = {}
    i, pos = 1, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and len(arg) > 1 and _number(arg) is None:
            key, eq, value = arg.partition("=")
            if eq:
                out[key] = value
            elif i + 1 < len(argv) and not (argv[i + 1].startswith("-")
                                             and _number(argv[i + 1]) is None):
                out[key] = argv[i + 1]
                i += 1
            else:
                out[key] = "(flag)"
        else:
            out[f"arg{pos}"] = arg
            pos += 1
        i += 1
    if argv:
        out = {"script": argv[0], **out}
    return out


def _arguments(a: ExpMeta, b: ExpMeta) -> list[tuple[str, Any, Any]]:
    if _step(a) or _step(b):
        ra, rb = _step(a).get("run"), _step(b).get("run")
        return [("run", ra, rb)] if ra != rb else []
    va, vb = argv_of(a), argv_of(b)
    if va == vb:
        return []
    return _changed(options(va), options(vb))


def _upstream(a: ExpMeta, b: ExpMeta) -> list[dict[str, Any]]:
    """The upstream experiments of A and B: by pipeline ``needs`` key where both are
    steps, else by identity; each row says same, different, removed or added."""
    rows = []
    na, nb = _step(a).get("needs") or {}, _step(b).get("needs") or {}
    keyed: set[str] = set()
    if isinstance(na, dict) and isinstance(nb, dict) and (na or nb):
        for key in sorted(set(na) | set(nb)):
            x, y = na.get(key), nb.get(key)
            keyed.update(_ident(v) for v in (x, y) if v)
            state = (SAME if x and y and _ident(x) == _ident(y) else
                     ADDED if not x else REMOVED if not y else CHANGED)
            rows.append({"key": key, "a": x, "b": y, "state": state})
    da = {d.identity: d for d in a.dependencies if d.identity not in keyed}
    db = {d.identity: d for d in b.dependencies if d.identity not in keyed}
    for ident in sorted(set(da) | set(db)):
        x, y = da.get(ident), db.get(ident)
        if x and y:
            state = SAME if (x.run_id is None or y.run_id is None or x.run_id == y.run_id) \
                and (x.manifest is None or y.manifest is None or x.manifest == y.manifest) \
                else CHANGED
        else:
            state = ADDED if x is None else REMOVED
        rows.append({"key": None, "a": x.name if x else None, "b": y.name if y else None,
                     "state": state})
    return rows


def _ident(name: Any) -> str:
    parsed = parse_name(str(name))
    return parsed.identity if parsed else str(name)


# -- as text (what the CLI prints) --------------------------------------------------------------
DIFF_WORDS = {SAME: "same", CHANGED: "changed", REMOVED: "removed", ADDED: "added"}
REPRODUCE_WORDS = {SAME: "identical", CHANGED: "different", REMOVED: "missing", ADDED: "extra"}


def _size(n: int) -> str:
    return f"{n} bytes" if n < 10_000 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def file_lines(files: FileComparison, words: dict[str, str] = DIFF_WORDS,
               list_same: bool = True) -> list[str]:
    """One line per file (state, path, sizes and hashes), a changed small text file's diff
    indented below it; without ``list_same`` the same files are one count at the end."""
    rows: list[tuple[str, str, str, list[str]]] = []
    for f in files.files:
        if f.state == SAME and not list_same and not f.ignored:
            continue
        word = words[f.state]
        if f.state == CHANGED and f.a and f.b:
            detail = f"{_size(f.a[0])} -> {_size(f.b[0])}, {f.a[1][:10]} -> {f.b[1][:10]}"
        else:
            known = f.a or f.b
            detail = f"{_size(known[0])}, {known[1][:10]}" if known else ""
        detail += " (ignored)" if f.ignored else ""
        rows.append((word, f.path, detail, [] if f.ignored else f.diff))
    width = max((len(r[0]) for r in rows), default=0)
    pwidth = min(max((len(r[1]) for r in rows), default=0), 40)
    out = []
    for word, path, detail, diff in rows:
        out.append(f"{word.ljust(width)}  {path.ljust(pwidth)}  {detail}".rstrip())
        out += [f"    {ln}" for ln in diff]
    if not list_same:
        n = sum(1 for f in files.files if f.state == SAME and not f.ignored)
        if n:
            out.append(f"{n} file{'s' if n != 1 else ''} {words[SAME]}")
    return out


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:.6g}"


def number_lines(found: FileNumbers) -> list[str]:
    """A file's numbers: key, A, B and the change (absolute and relative)."""
    rows = []
    for n in found.numbers:
        change = n.change
        if change is None:
            what = "only in A" if n.b is None else "only in B"
        elif same_number(n.a, n.b):
            what = "="
        else:
            rel = f" ({change / abs(n.a) * 100:+.1f}%)" if n.a else ""
            what = f"{'+' if change > 0 else ''}{_num(change)}{rel}"
        rows.append((n.key, _num(n.a), _num(n.b), what))
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    out = [f"{found.path}"]
    out += [f"  {k.ljust(widths[0])}  {a.rjust(widths[1])}  {b.rjust(widths[2])}  {w}"
            for k, a, b, w in rows]
    if found.truncated:
        out.append(f"  ... (the first {MAX_NUMBERS} numbers)")
    return out


def diff_lines(d: ExperimentDiff) -> list[str]:
    """``resutil diff`` as text: the two runs, then one section per kind of difference."""
    def show(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, (list, dict)):
            return json.dumps(v, default=str) if v else "none"
        return str(v)

    out = []
    for label, side in (("A", d.a), ("B", d.b)):
        commit = (side.get("commit") or "no commit")[:10]
        out.append(f"{label}  {side['name']}  ({side['where']}, {side['status']}, "
                   f"{side.get('started_at') or '?'}, {commit})")

    def section(title: str, rows: list[tuple[str, Any, Any]]) -> None:
        out.append("")
        if not rows:
            out.append(f"{title}: same")
            return
        out.append(f"{title}:")
        width = max(len(str(k)) for k, _, _ in rows)
        out.extend(f"  {str(k).ljust(width)}  {show(a)} -> {show(b)}" for k, a, b in rows)

    section("metadata", d.fields)
    section("arguments", d.arguments)
    section("params", d.params)
    section("environment", [*d.environment, *d.packages])
    out.append("")
    changed_ups = [u for u in d.upstream if u["state"] != SAME]
    if not changed_ups:
        out.append(f"upstream: same ({len(d.upstream)})" if d.upstream else "upstream: none")
    else:
        out.append("upstream:")
        for u in d.upstream:
            key = f"{u['key']}: " if u["key"] else ""
            out.append(f"  {DIFF_WORDS[u['state']]}  {key}{show(u['a'])} -> {show(u['b'])}")
    out.append("")
    code = d.code
    commits = f"{(code.commit_a or '-')[:10]} -> {(code.commit_b or '-')[:10]}"
    if not code.text and not code.files and not code.notes:
        out.append(f"code: same ({commits})")
    else:
        out.append(f"code ({commits}): {len(code.files)} file(s) differ")
        out.extend(f"  note: {n}" for n in code.notes)
        out.extend(code.text.rstrip("\n").splitlines())
    out.append("")
    if d.files is None:
        out.append(f"files: {d.files_note}")
    elif all(f.state == SAME for f in d.files.files):
        out.append(f"files: same ({len(d.files.files)})")
    else:
        out.append("files:")
        out.extend(f"  {ln}" for ln in file_lines(d.files, list_same=False))
    if d.numbers or d.numbers_note:
        out.append("")
        out.append("numbers:" + (f" {d.numbers_note}" if d.numbers_note and not d.numbers else ""))
        for found in d.numbers:
            out.extend(f"  {ln}" for ln in number_lines(found))
    return out


__all__ = [
    "ADDED", "CHANGED", "DIFF_WORDS", "REMOVED", "REPRODUCE_WORDS", "RUN_LOGS", "SAME",
    "CodeDiff", "ExperimentDiff", "FileChange", "FileComparison", "FileNumbers",
    "NumberChange", "Side", "argv_of", "code_diff", "compare_files", "compare_numbers",
    "diff_experiments", "diff_lines", "file_lines", "load_side", "number_lines",
    "numbers_in", "options", "same_number", "text_diff",
]
