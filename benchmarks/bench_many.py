#!/usr/bin/env python3
"""Many experiments on the local backend: sync of 1,000 small ones, listing and lineage of
10,000, the local listing of 2,000; each beside its reference, in one run.

* ``--count`` (1,000) small experiments of ``--files`` (5) CSV files each, made with
  resutil's own building blocks: ``push -A -j 4`` into an empty storage, ``push -A`` again
  (all up to date: every one checked, nothing moves), ``pull -A -j 4`` into a fresh clone;
  beside ``cp -r`` and ``tar -cf`` of the same results folder. Targets: push and pull under
  5 ms per experiment, the up-to-date push under 3 s.
* ``--big`` (10,000) experiments with ``--edges`` (20,000) dependency edges, all on the
  storage only (sidecars written by resutil's ``Remote.write_sidecar``; the archives are
  deliberately not zips, so reading one would fail), as a fresh clone sees them: ``list``
  and ``graph`` with no cache (the first run in the clone) and again. Target: under 1 s each.
* ``--local`` (2,000) local experiments: ``list --local`` with no cache, and again.
  Target: under 0.5 s.

Every command runs as a subprocess through the console script (wall clock, medians of
``--repeat``); each repetition of a push or pull starts from a fresh copy (untimed).

    python benchmarks/bench_many.py [--count 1000] [--big 10000] [--local 2000] [--repeat 3]
    python benchmarks/bench_many.py --only sync        # or: listing, local
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resutil.archive import ArchiveInfo  # noqa: E402
from resutil.config import load_config  # noqa: E402
from resutil.lineage.index import SHARED_INDEX  # noqa: E402
from resutil.metadata import ExpMeta, Manifest, write_meta  # noqa: E402
from resutil.naming import make_name, new_run_id  # noqa: E402
from resutil.remote import ARCHIVE_SUFFIX, Remote  # noqa: E402
from resutil.storage import open_storage  # noqa: E402
from resutil.workspace import Workspace  # noqa: E402

SEED = 20250105
T0 = datetime(2025, 1, 1)
PACKAGES = {f"package-{i:02d}": f"{i % 7}.{i % 13}.{i % 5}" for i in range(60)}
SOURCES = ("argv", "observed", "declared", "manual")
rows: list[tuple[str, float | None, str, float | None, str, str]] = []
figures: dict[str, float] = {}


def resutil_cmd() -> list[str]:
    here = Path(sys.executable).with_name("resutil")
    return [str(here)] if here.exists() else [sys.executable, "-m", "resutil"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("RESUTIL_")}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


CPU: dict[str, list[float]] = {}  # command word -> CPU seconds (user + system) of each run


def timed(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of a command (its CPU seconds go to CPU, under its first argument after
    the program, e.g. "push")."""
    subprocess.run(["sync"], check=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env())
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {cwd} exited {r.returncode}:\n{r.stderr[-3000:]}")
    word = next((a for a in cmd[1:] if not a.startswith("-")), cmd[0])
    CPU.setdefault(word, []).append(after.ru_utime - before.ru_utime
                                    + after.ru_stime - before.ru_stime)
    return took


def init(root: Path, remote: Path, name: str = "Bench") -> Path:
    root.mkdir(parents=True)
    (root / "resutil-conf.yaml").write_text(
        f"project_name: {name}\nresults_dir: results\nstorage_type: local\n"
        f"storage_config:\n  path: {remote}\n", encoding="utf-8")
    remote.mkdir(parents=True, exist_ok=True)
    return root


def record(label: str, seconds: float | None, ref_label: str = "", ref: float | None = None,
           target: str = "", verdict: str = "") -> None:
    rows.append((label, seconds, ref_label, ref, target, verdict))
    if seconds is not None:
        figures[label] = seconds


# -- 1. many small experiments: push -A, push -A up to date, pull -A ------------------------
def small_project(base: Path, count: int, files: int) -> Path:
    root = init(base / "proj", base / "unused-remote")
    ws = Workspace(root / "results")
    for i in range(count):
        name = ws.create(f"exp-{i}", T0 + timedelta(minutes=i)).name
        folder = ws.path(name)
        for k in range(files):
            (folder / f"out_{k}.csv").write_text(f"step,value\n{i},{k}\n" * (20 + k))
        now = (T0 + timedelta(minutes=i)).isoformat()
        write_meta(folder, ExpMeta(name=name, comment=f"exp-{i}", run_id=new_run_id(),
                                   status="finished", started_at=now, ended_at=now,
                                   environment={"host": "bench", "packages": PACKAGES}))
    return root


def point_at(root: Path, remote: Path) -> None:
    remote.mkdir(parents=True, exist_ok=True)
    conf = root / "resutil-conf.yaml"
    text = conf.read_text(encoding="utf-8").split("storage_config:")[0]
    conf.write_text(text + f"storage_config:\n  path: {remote}\n", encoding="utf-8")


def bench_sync(work: Path, count: int, files: int, repeat: int) -> None:
    template = small_project(work / "template", count, files)
    # The first push records each experiment's manifest: do it once on the template so
    # every repetition starts from the same, finished-and-sealed state.
    seal_remote = work / "seal-remote"
    point_at(template, seal_remote)
    timed([*resutil_cmd(), "push", "-A", "-j", "4"], template)
    shutil.rmtree(seal_remote)
    shutil.rmtree(template / "results" / ".resutil", ignore_errors=True)
    cps, tars, pushes, again, pulls = [], [], [], [], []
    for rep in range(repeat):
        d = work / f"rep-{rep}"
        d.mkdir()
        cps.append(timed(["cp", "-r", str(template / "results"), str(d / "cp")], d))
        tars.append(timed(["tar", "-cf", str(d / "r.tar"), "-C", str(template), "results"], d))
        proj = d / "proj"
        subprocess.run(["cp", "-a", str(template), str(proj)], check=True)
        remote = d / "remote"
        remote.mkdir()
        point_at(proj, remote)
        pushes.append(timed([*resutil_cmd(), "push", "-A", "-j", "4"], proj))
        again.append(timed([*resutil_cmd(), "push", "-A", "-j", "4"], proj))
        clone = init(d / "clone", remote)
        pulls.append(timed([*resutil_cmd(), "pull", "-A", "-j", "4"], clone))
        got = sum(1 for p in (clone / "results").iterdir() if not p.name.startswith("."))
        assert got == count, f"pulled {got} of {count}"
    cp, tar = statistics.median(cps), statistics.median(tars)
    push, up = statistics.median(pushes), statistics.median(again)
    pull = statistics.median(pulls)
    n = count
    record(f"cp -r of {n} experiments", cp)
    record(f"tar -cf of {n} experiments", tar)
    for label, t, word in ((f"push -A of {n}", push, "push"), (f"pull -A of {n}", pull, "pull")):
        per = t / n * 1000
        # (push: the sealing push, then per repetition the first push and the one again)
        cpu = statistics.median(CPU[word][1::2] if word == "push" else CPU[word]) / n * 1000
        record(label, t, "cp -r / tar -cf", None,
               f"{per:.1f} ms/exp < 5 ms; {t / cp:.1f}x cp -r, {t / tar:.1f}x tar; "
               f"cpu {cpu:.1f} ms/exp", "PASS" if per < 5 else "FAIL")
        figures[label + " ms/exp"] = per
        figures[label + " cpu ms/exp"] = cpu
    record(f"push -A of {n}, all up to date", up, "", None, "< 3 s",
           "PASS" if up < 3 else "FAIL")


# -- 2. list and graph over 10,000 remote experiments, fresh clone ---------------------------
def remote_project(work: Path, n: int, n_edges: int) -> Path:
    rng = random.Random(SEED)
    store = work / "store"
    project = init(work / "writer", store, "BenchMany")
    names = [make_name(T0 + timedelta(minutes=7 * i, seconds=i % 60), f"run-{i}").name
             for i in range(n)]
    deps: list[dict[int, str]] = [{} for _ in range(n)]
    edges = 0
    while edges < n_edges:
        i = rng.randrange(1, n)
        j = i - 1 - min(int(rng.expovariate(1 / 40)), i - 1)
        if j not in deps[i]:
            deps[i][j] = rng.choice(SOURCES)
            edges += 1
    config = load_config(project / "resutil-conf.yaml")
    remote = Remote(open_storage(config.storage_settings()), "BenchMany")
    (store / "BenchMany").mkdir()
    for i, name in enumerate(names):
        started = T0 + timedelta(minutes=7 * i)
        meta = ExpMeta(
            name=name, comment=f"run-{i}", run_id=new_run_id(),
            status=rng.choice(("finished",) * 8 + ("failed", "interrupted")),
            args=f"python train.py --lr {rng.random():.4f}", result_dir=f"results/{name}",
            commit_hash=f"{rng.getrandbits(160):040x}", started_at=started.isoformat(),
            ended_at=(started + timedelta(minutes=5)).isoformat(),
            environment={"python": "3.11.7", "host": "node01", "packages": PACKAGES},
            manifest=Manifest({f"out/file{k}.bin": (1000 + k, f"{rng.getrandbits(128):032x}")
                               for k in range(5)}))
        for j, source in sorted(deps[i].items()):
            meta.add_dependency(names[j], source)
        blob = b"not a zip: reading this archive means the command downloaded it\n"
        (store / "BenchMany" / (name + ARCHIVE_SUFFIX)).write_bytes(blob)
        digest = f"{rng.getrandbits(128):032x}"
        info = ArchiveInfo(meta.manifest, len(blob), digest)  # type: ignore[arg-type]
        remote.write_sidecar(meta, info, name + ARCHIVE_SUFFIX)
    shutil.rmtree(project)
    return store


def bench_listing(work: Path, n: int, n_edges: int, repeat: int) -> None:
    store = remote_project(work, n, n_edges)
    shared = store / "BenchMany.resutil" / SHARED_INDEX
    first: list[float] = []
    cold: dict[str, list[float]] = {"list": [], "graph": []}
    warm: dict[str, list[float]] = {"list": [], "graph": []}
    graph = [*resutil_cmd(), "graph", "--format", "dot"]
    for rep in range(repeat):
        # The first reader of a remote nobody listed before reads every sidecar, then
        # shares the index it built; a fresh clone after that reads that one file.
        shared.unlink(missing_ok=True)
        first.append(timed(graph, init(work / f"first-{rep}", store, "BenchMany")))
        assert shared.exists(), "the first reader shared no index"
        for cmd in ("list", "graph"):
            clone = init(work / f"clone-{cmd}-{rep}", store, "BenchMany")  # a fresh clone
            args = graph if cmd == "graph" else [*resutil_cmd(), "list"]
            cold[cmd].append(timed(args, clone))
            warm[cmd].append(timed(args, clone))
            cache = clone / "results" / ".resutil" / "cache"
            read = [p.name for p in cache.rglob("*") if "-archive-" in p.name
                    or "-members-" in p.name] if cache.exists() else []
            assert not read, f"{cmd} read archives: {read[:3]}"
    for cmd in ("list", "graph"):
        c, w = statistics.median(cold[cmd]), statistics.median(warm[cmd])
        record(f"{cmd} of {n} remote, fresh clone", c, f"{cmd}, cache warm", w, "< 1 s",
               "PASS" if c < 1 else "FAIL")
    f = statistics.median(first)
    record(f"graph of {n}, first reader of the remote", f, "graph, fresh clone",
           statistics.median(cold["graph"]), "(reads every sidecar once)", "")


# -- 3. list --local of 2,000 local experiments ----------------------------------------------
def bench_local(work: Path, n: int, repeat: int) -> None:
    root = init(work / "local", work / "local-remote")
    ws = Workspace(root / "results")
    rng = random.Random(SEED + 1)
    for i in range(n):
        name = ws.create(f"local-{i}", T0 + timedelta(minutes=3 * i)).name
        folder = ws.path(name)
        (folder / "metrics.json").write_text('{"acc": 0.5}\n')
        started = T0 + timedelta(minutes=3 * i)
        write_meta(folder, ExpMeta(
            name=name, comment=f"local-{i}", run_id=new_run_id(),
            status=rng.choice(("finished",) * 8 + ("failed", "interrupted")),
            args="python train.py", started_at=started.isoformat(),
            ended_at=(started + timedelta(minutes=2)).isoformat(),
            environment={"python": "3.11.7", "host": "node01", "packages": PACKAGES},
            manifest=Manifest({"metrics.json": (13, f"{rng.getrandbits(128):032x}")})))
    cache = root / "results" / ".resutil"
    cold, warm = [], []
    for _ in range(repeat):
        shutil.rmtree(cache, ignore_errors=True)
        cold.append(timed([*resutil_cmd(), "list", "--local"], root))
        warm.append(timed([*resutil_cmd(), "list", "--local"], root))
    c, w = statistics.median(cold), statistics.median(warm)
    record(f"list --local of {n}, no cache", c, "cache warm", w, "< 0.5 s",
           "PASS" if c < 0.5 else "FAIL")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--big", type=int, default=10_000)
    ap.add_argument("--edges", type=int, default=20_000)
    ap.add_argument("--local", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="sync,listing,local")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resutil-bench-many-"))
    only = set(args.only.split(","))
    t0 = time.perf_counter()
    try:
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; work {work}")
        if "sync" in only:
            bench_sync(work / "sync", args.count, args.files, args.repeat)
        if "listing" in only:
            bench_listing(work / "listing", args.big, args.edges, args.repeat)
        if "local" in only:
            bench_local(work / "localonly", args.local, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'operation':44s} {'median s':>9s}  {'reference':20s} {'ref s':>7s}  "
          "target / ratio")
    for label, s, ref_label, ref, target, verdict in rows:
        print(f"{label:44s} {s if s is None else f'{s:9.3f}':>9}  {ref_label:20s} "
              f"{'' if ref is None else f'{ref:7.3f}':>7}  {target} {verdict}")
    print(f"(whole run {time.perf_counter() - t0:.0f} s, medians of {args.repeat})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
