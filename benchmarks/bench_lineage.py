#!/usr/bin/env python3
"""How long ``resutil graph`` takes on a large project, and that it downloads no archive.

Generates (seeded, deterministic) a project of ``--n`` experiments with ``--edges``
dependency edges under ``benchmarks/work/lineage/``: 40 % local only, 30 % on the remote
only (a local-folder storage with one sidecar per experiment, written by resutil's own
``Remote.write_sidecar``), 30 % both. Each experiment's metadata looks like a real run's
(arguments, commit, some uncommitted files, ~60 package versions, a manifest).

The remote's archives are deliberately *not* zips: if ``graph`` opened any archive to read
metadata, it would fail with an ArchiveError, so a passing run proves none was read.

It then runs ``resutil graph --format dot`` and ``--format mermaid`` as subprocesses
(the real console script), once cold (empty metadata cache) and ``--runs`` times warm, and
prints the median seconds and PASS/FAIL against ``--target``.

Usage::

    python benchmarks/bench_lineage.py [--n 10000] [--edges 20000] [--runs 3] [--regen]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from resutil.archive import ArchiveInfo  # noqa: E402
from resutil.config import load_config  # noqa: E402
from resutil.metadata import ExpMeta, Manifest, write_meta  # noqa: E402
from resutil.naming import make_name  # noqa: E402
from resutil.remote import ARCHIVE_SUFFIX, Remote  # noqa: E402
from resutil.storage import open_storage  # noqa: E402

SEED = 20250104
PROJECT = "BenchLineage"
SOURCES = ("argv", "observed", "declared", "manual")
START = datetime(2024, 3, 1, 9, 0, 0)
COMMENTS = ("baseline", "lr-sweep", "more-data", "ablation", "", "eval", "features", "")
PACKAGES = {f"package-{i:02d}": f"{i % 7}.{i % 13}.{i % 5}" for i in range(60)}


def generate(root: Path, n: int, n_edges: int) -> Path:
    """Write the project under ``root``; returns the project folder."""
    rng = random.Random(SEED)
    if root.exists():
        shutil.rmtree(root)
    project = root / "project"
    store = root / "store"
    results = project / "results"
    results.mkdir(parents=True)
    store.mkdir()
    (project / "resutil-conf.yaml").write_text(
        f"project_name: {PROJECT}\nresults_dir: results\nstorage_type: local\n"
        f"storage_config:\n  path: {store}\n",
        encoding="utf-8",
    )

    # One name per experiment, 7 minutes apart: distinct prefixes, sorted by time.
    names = [make_name(START + timedelta(minutes=7 * i, seconds=i % 60),
                       COMMENTS[i % len(COMMENTS)] and f"{COMMENTS[i % len(COMMENTS)]}-{i}").name
             for i in range(n)]

    # Edges only from earlier to later experiments (a DAG), ~n_edges / n per experiment.
    deps: list[dict[int, str]] = [{} for _ in range(n)]
    edges = 0
    while edges < n_edges:
        i = rng.randrange(1, n)
        j = i - 1 - min(int(rng.expovariate(1 / 40)), i - 1)  # mostly recent upstreams
        if j not in deps[i]:
            deps[i][j] = rng.choice(SOURCES)
            edges += 1

    config = load_config(project / "resutil-conf.yaml")
    remote = Remote(open_storage(config.storage_settings()), PROJECT)
    archive_dir = store / PROJECT
    archive_dir.mkdir()
    for i, name in enumerate(names):
        where = rng.random()
        local, on_remote = where < 0.7, where >= 0.4
        meta = _meta(rng, name, [names[j] for j in sorted(deps[i])], list(deps[i].values()))
        if local:
            folder = results / name
            folder.mkdir()
            (folder / "metrics.csv").write_text("step,loss\n0,1.0\n", encoding="utf-8")
            write_meta(folder, meta)
        if on_remote:
            blob = b"not a zip: reading this archive means graph downloaded it\n"
            (archive_dir / (name + ARCHIVE_SUFFIX)).write_bytes(blob)
            info = ArchiveInfo(meta.manifest, len(blob), f"{rng.getrandbits(128):032x}")  # type: ignore[arg-type]
            remote.write_sidecar(meta, info, name + ARCHIVE_SUFFIX)
    return project


def _meta(rng: random.Random, name: str, dep_names: list[str], sources: list[str]) -> ExpMeta:
    started = datetime.strptime(name[7:22], "%Y%m%dT%H%M%S")
    meta = ExpMeta(
        name=name, comment=name[23:], status=rng.choice(("finished",) * 8 + ("failed", "interrupted")),
        args=f"python train.py --lr {rng.random():.4f} --epochs {rng.randrange(1, 100)}",
        result_dir=f"results/{name}", commit_hash=f"{rng.getrandbits(160):040x}",
        uncommitted_files=["train.py"] if rng.random() < 0.2 else [],
        started_at=started.isoformat(), ended_at=(started + timedelta(minutes=5)).isoformat(),
        environment={"python": "3.11.7", "platform": "Linux-6.1-x86_64", "host": "node01",
                     "user": "alice", "cwd": "/home/alice/proj", "resutil": "0.2.0",
                     "packages": PACKAGES},
        manifest=Manifest({f"out/file{k}.bin": (1000 + k, f"{rng.getrandbits(128):032x}")
                           for k in range(5)}),
    )
    for dep, source in zip(dep_names, sources):
        meta.add_dependency(dep, source)
    return meta


def resutil_command() -> list[str]:
    script = Path(sys.executable).parent / "resutil"
    return [str(script)] if script.exists() else [sys.executable, "-m", "resutil.cli"]


def run(project: Path, fmt: str) -> tuple[float, float, int]:
    """Wall and CPU seconds of one ``resutil graph --format fmt``, and its output's size.

    CPU time is reported too because wall time on a shared machine includes waiting for
    a core; when the two differ much, the machine was busy.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUTIL_")}
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([*resutil_command(), "graph", "--format", fmt], cwd=project,
                          env=env, capture_output=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"resutil graph --format {fmt} failed:\n{proc.stderr.decode(errors='replace')}")
    return elapsed, cpu, len(proc.stdout)


def add_project_args(ap: argparse.ArgumentParser, work: Path) -> None:
    """The options of a benchmark on a generated project: its size, folder, regeneration."""
    ap.add_argument("--n", type=int, default=10_000, help="experiments")
    ap.add_argument("--edges", type=int, default=20_000, help="dependency edges")
    ap.add_argument("--work", type=Path, default=work)
    ap.add_argument("--regen", action="store_true", help="regenerate the project")


def generated_project(args: argparse.Namespace) -> Path:
    """The project ``generate`` made under ``args.work`` (made now if missing, or asked)."""
    stamp = args.work / f".generated-{args.n}-{args.edges}-{SEED}"
    if args.regen or not stamp.exists():
        t0 = time.perf_counter()
        generate(args.work, args.n, args.edges)
        stamp.touch()
        print(f"generated {args.n} experiments, {args.edges} edges in "
              f"{time.perf_counter() - t0:.1f} s under {args.work}")
    return args.work / "project"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_args(ap, HERE / "work" / "lineage")
    ap.add_argument("--runs", type=int, default=3, help="warm runs per format (median)")
    ap.add_argument("--target", type=float, default=1.0, help="seconds")
    args = ap.parse_args()

    project = generated_project(args)
    cache = project / "results" / ".resutil" / "cache"
    shutil.rmtree(cache, ignore_errors=True)

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    ok = True
    for i, fmt in enumerate(("dot", "mermaid")):
        cold = ""
        if i == 0:  # the first run reads every file and fills the metadata index
            wall, cpu, _ = run(project, fmt)
            cold = f"; cold (empty cache) {wall:.2f} s, cpu {cpu:.2f} s"
        times, cpus, sizes = zip(*(run(project, fmt) for _ in range(args.runs)))
        med = statistics.median(times)
        verdict = "PASS" if med < args.target else "FAIL"
        ok &= verdict == "PASS"
        print(f"graph --format {fmt:8s} {args.n} exps / {args.edges} edges: median {med:.2f} s "
              f"of {args.runs} ({', '.join(f'{t:.2f}' for t in times)}), cpu median "
              f"{statistics.median(cpus):.2f} s{cold}; {med / args.target:.0%} of "
              f"{args.target:g} s; output {sizes[0] / 1e6:.1f} MB  {verdict}")
    fetched = [p.name for p in cache.glob("*-archive-*")] if cache.exists() else []
    print(f"archives read: {len(fetched)}")
    ok &= not fetched
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
