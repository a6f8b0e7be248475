"""Operations on single experiments: add by hand, relabel, describe, list, verify."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import DependencyError, ExperimentError, ExperimentNotFound
from .metadata import (
    STATUSES,
    iter_files,
    read_meta,
    upstream_record,
    write_meta,
)
from .naming import IDENTITY_LEN, check_comment, parse_name
from .progress import NO_PROGRESS_FACTORY, CallbackFactory
from .project import Project
from .publish import same_run
from .remote import RemoteExperiment
from .runs import (
    new_experiment,
    record_start,
    refuse_live_run,
    run_liveness,
)


def add_experiment(project: Project, comment: str, deps: list[str]) -> Path:
    """An experiment made by hand (input data, external results) with manual dependencies."""
    check_comment(comment)
    resolved = [project.resolve(d) for d in deps]
    ws = project.workspace
    folder, meta = new_experiment(project, comment, claim=not project.no_remote,
                                  status="finished")
    record_start(project, folder, meta, " ".join(sys.argv), code=False, argv=sys.argv)
    meta.ended_at = meta.started_at
    for dep in resolved:
        local = ws.local_name(dep)
        meta.add_dependency(dep, "manual", **(upstream_record(ws.path(local)) if local else {}))
    write_meta(folder, meta)
    return folder


def change_comment(project: Project, query: str, comment: str, force: bool = False) -> str:
    """Relabel an experiment locally and remotely; returns the new name.

    A run still going on this host is refused unless ``force``: renaming its folder
    would pull it from under the running process."""
    check_comment(comment)
    name = project.resolve(query)
    new = parse_name(name).with_comment(comment).name  # type: ignore[union-attr]
    ws = project.workspace
    local = ws.local_name(name)
    meta = None
    if local and not force:
        refuse_live_run(ws.path(local), "relabel")
    if local:
        meta = read_meta(ws.path(local))
        new = ws.rename(local, comment)
        meta.name, meta.comment = new, comment
        write_meta(ws.path(new), meta)
    if not project.no_remote:
        exp = project.remote.get(name)
        # Only this run's copy: the remote may hold another run under this identity, one
        # that this unpushed experiment will move away from when it is pushed.
        if exp is not None and exp.name != new and (meta is None or same_run(project, meta, exp)):
            project.remote.rename(exp, new)
    return new


@dataclass
class Removal:
    """What ``remove`` did: (name, where) per experiment, and warnings."""

    removed: list[tuple[str, list[str]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class RemovalItem:
    """One experiment ``remove`` takes away: its local folder and/or its remote copy, and
    what stays: ``kept`` is "remote" or "local" where this run is still whole, None when
    this is its only copy (or the only copy of changes made since it was pushed)."""

    name: str
    local: str | None
    remote: RemoteExperiment | None
    kept: str | None

    @property
    def where(self) -> list[str]:
        return [w for w, on in (("local", self.local), ("remote", self.remote)) if on]


@dataclass
class RemovalPlan:
    """What ``resutil rm`` would remove; ``remove`` does it."""

    items: list[RemovalItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def needs_yes(self) -> list[RemovalItem]:
        """The removals a person should confirm: from the team's storage, or of a last copy."""
        return [i for i in self.items if i.remote is not None or i.kept is None]


def plan_removal(project: Project, queries: list[str], local_only: bool = False,
                 remote_only: bool = False, force: bool = False) -> RemovalPlan:
    """What removing experiments locally and/or remotely would do, checked before anything
    is removed. Refuses (unless ``force``) when other experiments depend on one of them,
    or a run on this host is still writing one. A local removal is fine with dependents
    when the remote holds the same run: the lineage stays whole there."""
    from .errors import StorageError
    from .lineage import collect, dependents, unreadable

    both = not local_only and not remote_only
    ws = project.workspace
    records = collect(project, remote=not local_only)
    names = [project.resolve(q, remote=not local_only) for q in queries]
    targets = {n[:IDENTITY_LEN] for n in names}
    plan = RemovalPlan(warnings=[f"{w} (cannot tell whether it depends on what is removed)"
                                 for w in unreadable(records, targets)])
    listing: dict[str, RemoteExperiment] = {}
    if not project.no_remote:
        try:
            listing = project.remote.experiments()
        except StorageError as e:
            if not local_only:
                raise
            plan.warnings.append(f"{e}; cannot tell whether the remote keeps a copy")
    for name in names:
        ident = name[:IDENTITY_LEN]
        local = ws.local_name(name)
        exp = listing.get(ident)
        remote_copy = local_only and local and exp is not None and _remote_keeps(
            project, ws.path(local), exp)
        users = dependents(records, ident, exclude=targets)
        if users and not force and not remote_copy:
            raise DependencyError(
                f"{name} is upstream of {', '.join(users[:3])}{' ...' if len(users) > 3 else ''}; "
                "remove those first or use --force"
            )
        if local and not remote_only and not force:
            refuse_live_run(ws.path(local), "remove")
        item = RemovalItem(records[ident].name if ident in records else name,
                           local if (local_only or both) else None,
                           exp if (remote_only or both) else None, None)
        if not item.where:
            where = "local" if local_only else "on the remote" if remote_only else "anywhere"
            raise ExperimentNotFound(f"{name} is not {where}")
        if local_only and remote_copy:
            item.kept = "remote"
        elif remote_only and local:
            item.kept = "local"
        plan.items.append(item)
    return plan


def _remote_keeps(project: Project, folder: Path, exp: RemoteExperiment) -> bool:
    """Whether the remote copy is this very run with these files (nothing is lost locally)."""
    from .publish import up_to_date

    try:
        meta = read_meta(folder)
        return same_run(project, meta, exp) and (
            meta.manifest is None or up_to_date(project, folder, meta, exp))
    except ExperimentError:
        return False


def remove(project: Project, plan: RemovalPlan) -> Removal:
    """Remove what ``plan_removal`` planned."""
    result = Removal(warnings=list(plan.warnings))
    for item in plan.items:
        if item.local:
            project.workspace.remove(item.local)
        if item.remote is not None:
            project.remote.delete(item.remote)
        result.removed.append((item.name, item.where))
    return result


def remove_experiments(project: Project, queries: list[str], local_only: bool = False,
                       remote_only: bool = False, force: bool = False) -> Removal:
    """Remove experiments locally and/or remotely (``plan_removal``, then ``remove``)."""
    return remove(project, plan_removal(project, queries, local_only, remote_only, force))


def describe_experiment(project: Project, query: str, files: bool = False) -> dict[str, Any]:
    """Everything ``resutil show`` prints, as plain data; ``warnings`` names the other
    experiments whose metadata could not be read (so ``downstream`` may lack them).

    With ``files``, ``file_list``: [path, size] of every file in a local experiment's
    folder, or of a remote-only one as its sidecar lists them; None when the sidecar does
    not (a run of very many files, one pushed by 0.1.x): ``files_note`` says so."""
    from .lineage import collect, dependents, unreadable

    found = project.locate(query, with_manifest=True)
    name, meta, local = found.name, found.meta, found.folder and found.name
    if local:
        where = "local" + (" and remote" if not project.no_remote and project.remote.get(name) else "")
    else:
        where = "remote only"
    records = collect(project, remote=not project.no_remote)
    downstream = dependents(records, name[:IDENTITY_LEN])
    env = meta.environment or {}
    man = meta.manifest
    count, total = (len(man.files), man.total_size) if man else (None, None)
    if found.remote is not None:  # the sidecar records how many files, how large
        side = project.remote.paired(found.remote)
        summary = (side or {}).get("meta", {}).get("manifest")
        if isinstance(summary, dict) and isinstance(summary.get("count"), int):
            count, total = summary["count"], summary.get("total_size")
    extra: dict[str, Any] = {}
    if files:
        if found.folder:
            extra["file_list"] = _file_list(found.folder)
        elif man is not None:
            extra["file_list"] = [[rel, size] for rel, (size, _) in sorted(man.files.items())]
        else:
            extra["file_list"] = None
            extra["files_note"] = ("only on the remote, whose record does not list its files: "
                                   f"they are listed once pulled (resutil pull {name})")
    return {
        "name": local or name,
        "where": where,
        "status": {"dead": "dead (its process is gone; 'resutil push' records it as "
                           "interrupted)", "unknown": "running?"}.get(
            run_liveness(meta) or "", meta.status) if local else meta.status,
        "comment": meta.comment or (parse_name(name).comment if parse_name(name) else ""),
        "started_at": meta.started_at,
        "ended_at": meta.ended_at,
        "args": meta.args,
        "commit": meta.commit_hash,
        "uncommitted": meta.uncommitted_files,
        "python": env.get("python"),
        "host": env.get("host"),
        "files": count,
        "size": human_size(total) if isinstance(total, int) else None,
        "pipeline": meta.pipeline,
        # By identity: an upstream relabelled since is shown under its current name.
        "upstream": [{"name": records[d.identity].name if d.identity in records else d.name,
                      "source": d.source} for d in meta.dependencies],
        "downstream": downstream,
        "warnings": unreadable(records, {name[:IDENTITY_LEN]}),
        **extra,
    }


def show_lines(info: dict[str, Any]) -> list[str]:
    """``describe_experiment``'s data as the plain lines ``resutil show`` prints (and the
    terminal UI's detail pane shows): a list one item a line, nothing cut short."""
    import json

    lines = [f"{info['name']}  ({info['where']})"]
    keys = ("status", "comment", "started_at", "ended_at", "args", "commit", "uncommitted",
            "python", "host", "files", "size", "pipeline")
    width = max(map(len, keys)) + 2

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict):
            items = [f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
                     for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [str(v) for v in value]
        else:
            items = [str(value)]
        for i, item in enumerate(items or [""]):
            lines.append(f"  {(key if i == 0 else '').ljust(width)}{item}")

    for key in keys:
        if info.get(key) not in (None, "", [], {}):
            add(key, info[key])
    upstream = [f"{d['name']}  ({d['source']})" for d in info["upstream"]]
    for title, entries in (("upstream", upstream), ("downstream", info["downstream"])):
        if entries:
            lines.append(title)
            lines += [f"  {e}" for e in entries]
    if "file_list" in info:
        lines.append("files")
        if info["file_list"] is None:
            lines.append(f"  ({info['files_note']})")
        else:
            sizes = [human_size(size) for _, size in info["file_list"]]
            w = max(map(len, sizes), default=0)
            lines += [f"  {s.rjust(w)}  {rel}" for (rel, _), s in zip(info["file_list"], sizes)]
    return lines


def _file_list(folder: Path) -> list[list[Any]]:
    """[path, size] of the files an experiment folder holds (its metadata file left out)."""
    from .metadata import EXP_FILE

    return sorted([rel, st.st_size] for rel, _, st in iter_files(folder) if rel != EXP_FILE)


def human_size(n: float) -> str:
    """Bytes for people: 512 B, 1.5 KB, 3.2 GB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


LIST_STATUSES = (*STATUSES, "dead", "broken")  # what `resutil list --status` takes


@dataclass(frozen=True)
class ListFilter:
    """Which experiments ``list_experiments`` keeps: any of ``statuses`` (as shown: a run
    whose process is gone is "dead"), a comment matching ``grep`` (a regular expression,
    any case), started at ``since`` or later."""

    statuses: tuple[str, ...] = ()
    grep: str | None = None
    since: datetime | None = None

    def keeps(self, row: dict[str, Any]) -> bool:
        import re

        if self.statuses and shown_status(row).rstrip("?") not in self.statuses:
            return False
        if self.grep is not None and not re.search(self.grep, row["comment"], re.IGNORECASE):
            return False
        return self.since is None or datetime.fromisoformat(row["date"]) >= self.since


def shown_status(row: dict[str, Any]) -> str:
    """A row's status as ``resutil list`` shows it (a dead run, one it cannot tell)."""
    return {"dead": "dead", "unknown": "running?"}.get(row["liveness"] or "", row["status"] or "")


@dataclass
class Listing:
    """What ``list_experiments`` found: one row per experiment, warnings, and whether the
    remote was listed ("listed"), left out ("off") or could not be reached ("unreachable")."""

    rows: list[dict[str, Any]]
    warnings: list[str]
    remote: str


def list_experiments(project: Project, remote: bool = True, where: ListFilter = ListFilter(),
                     details: bool = False, local: dict[str, Any] | None = None) -> Listing:
    """One row per experiment (by identity), oldest first: name, identity, comment, date
    (its start, local time), local, remote (None when the remote could not be listed),
    status and liveness; with ``details`` also its commit.

    A remote experiment's status comes from the one listing of the sidecar folder (the
    status is in each sidecar's name); ``details`` reads the metadata of remote-only ones
    (each once, then from the cache). A local experiment whose metadata cannot be read is
    listed as "broken" with a warning; an unreachable storage is a warning and local rows.
    """
    from .errors import StorageError
    from .lineage import BROKEN, local_records

    ws = project.workspace
    # (each head parsed once per change, not once per list; ``local``: already read)
    records = local_records(ws) if local is None else local
    local = {ident: rec.name for ident, rec in records.items()}
    warnings: list[str] = []
    remote_exps: dict[str, Any] = {}
    state = "off"
    if remote and not project.no_remote:
        try:
            remote_exps = project.remote.experiments()
            state = "listed"
        except StorageError as e:  # a wrong config is no storage trouble: that fails
            state = "unreachable"
            warnings.append(f"{e} - showing local experiments only")
    rows = []
    for ident in sorted(set(local) | set(remote_exps)):
        commit = None
        if ident in local:
            rec = records[ident]
            name = rec.name
            if rec.problem:
                status, liveness = BROKEN, None
                warnings.append(rec.problem)
            else:
                meta = rec.meta
                status, liveness, commit = meta.status, run_liveness(meta), meta.commit_hash
        else:
            name = remote_exps[ident].name
            status, liveness = remote_exps[ident].listed_status or "", None
        parsed = parse_name(name)
        assert parsed is not None
        rows.append({"name": name, "identity": ident, "comment": parsed.comment,
                     "date": parsed.time.isoformat(), "local": ident in local,
                     "remote": ident in remote_exps if state != "unreachable" else None,
                     "status": status, "liveness": liveness, "commit": commit})
    rows = [r for r in rows if where.keeps(r)]
    if details and state == "listed":
        _remote_details(project, [r for r in rows if not r["local"]], warnings)
    if not details:
        for r in rows:
            del r["commit"]
    return Listing(rows, warnings, state)


def _remote_details(project: Project, rows: list[dict[str, Any]], warnings: list[str]) -> None:
    """Fill in the commit (and a status its sidecar's name lacks) of remote-only rows."""
    if not rows:
        return
    from .lineage import collect

    records = collect(project)
    for row in rows:
        rec = records.get(row["identity"])
        if rec is None:
            continue
        if rec.problem:
            warnings.append(rec.problem)
            continue
        row["commit"] = rec.meta.commit_hash
        row["status"] = row["status"] or rec.meta.status


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A start for ``list --since``: a date (2024-07-06), a date and time (2024-07-06T09:30,
    "2024-07-06 09:30"), "today", "yesterday", or an age: 30m, 12h, 3d, 2w. ValueError
    saying what is accepted otherwise."""
    import re
    from datetime import timedelta

    now = now or datetime.now()
    value = text.strip().lower()
    if value in ("today", "yesterday"):
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return day - timedelta(days=1) if value == "yesterday" else day
    age = re.fullmatch(r"(\d+)\s*(m|min|h|d|w)", value)
    if age:
        unit = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        return now - timedelta(**{unit[age.group(2)]: int(age.group(1))})
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ValueError(f"'{text}' is not a date (2024-07-06, 2024-07-06T09:30) or an age "
                         "(30m, 12h, 3d, 2w, today, yesterday)") from None
    # Experiment names carry local time: an offset given is converted to it.
    return when.astimezone().replace(tzinfo=None) if when.tzinfo else when


def verify_many(
    project: Project, queries: list[str], local_only: bool, remote_only: bool,
    progress: CallbackFactory = NO_PROGRESS_FACTORY,
) -> Iterator[tuple[str, str, list[str], str | None]]:
    """(name, where, problems, note) for each checked copy of each experiment; ``where`` is
    "local" or "remote". Without ``queries``: every local folder and every remote archive
    (a remote that cannot be listed is one entry with its error, the local ones still
    come). Remote archives are downloaded whole to check them (``progress`` follows)."""
    from .errors import StorageError
    from .sync import verify_local, verify_remote

    ws = project.workspace
    use_remote = not local_only and not project.no_remote
    if queries:
        names = [project.resolve(q, remote=use_remote) for q in queries]
    else:
        local = ws.names()
        names = [] if remote_only else list(local.values())
        if use_remote:
            try:
                listing = project.remote.experiments()
            except StorageError as e:
                yield project.remote.describe(), "remote", [str(e)], None
                use_remote = False
            else:
                names += [e.name for i, e in listing.items() if i not in local]
                names.sort()
    for name in names:
        local_name = ws.local_name(name)
        if local_name and not remote_only:
            folder = ws.path(local_name)
            try:
                manifest = read_meta(folder).manifest
            except ExperimentError as e:  # a broken record is a fault of this one only
                yield local_name, "local", [str(e)], None
            else:
                if manifest is None:  # nothing to check against: a note, not a fault
                    yield local_name, "local", [], ("no manifest recorded (still running, or "
                                                    "made by resutil 0.1.x): nothing to check")
                else:
                    yield local_name, "local", verify_local(folder), None
        if use_remote:
            exp = project.remote.get(name)
            if exp is not None:
                problems, note = verify_remote(project, exp, progress(exp.name))
                yield exp.name, "remote", problems, note
            elif remote_only and queries:
                yield name, "remote", ["not on the remote"], None
