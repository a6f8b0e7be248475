#!/usr/bin/env python3
"""The 2 GB experiment B on every backend: one small file read from it without the rest,
and the peak memory of pushing and pulling it.

For the local backend and each cloud backend on the test suite's local servers (GCS on
gcp-storage-emulator, Google Drive and Box on the fakes in tests/servers/, each signed in
with a throw-away key through the real sign-in; the servers run in child processes, see
bench_backends.py), in one run:

* **push** of experiment B (``generate.py``'s three large files, 2.09 GB, plus a 1 KB
  ``summary.json``) with ``resutil push`` under ``/usr/bin/time -v``: wall time and peak
  RSS (maximum resident set size, memory maps included). Target: under 300 MB.
* **one file**: from a fresh clone (nothing local), ``summary.json`` read by
  - ``resutil cat EXP summary.json`` (the console script, wall clock; target on the local
    backend: under 0.3 s), its first run in the clone (sidecar not cached yet) and again;
  - ``partial.open_file(...).read()`` in-process with the storage signed in and the remote
    listed (what a second read in a script or the Snakemake plugin costs), beside ONE raw
    ranged request of the same bytes through the SDK's own client (GCS
    ``download_as_bytes(start, end)``, Drive ``files.get_media`` with a ``Range`` header,
    Box ``downloads.download_file(range=)``, local ``os.pread``). Target: under 2x;
  - the bytes the storage handed over for it (ranged reads and whole objects, counted on
    the storage object in-process). Target: under 1 MB.
* **pull** of B into a fresh clone with ``resutil pull`` under ``/usr/bin/time -v``: wall
  time and peak RSS. Target: under 300 MB.

    .venv/bin/python benchmarks/bench_big.py [--data DIR] [--backends local,gcs,gdrive,box]
        [--repeat 30] [--json OUT]

``--data`` is the folder ``generate.py --only B`` wrote into (it holds ``B/``); by default
``benchmarks/data/scale-1`` (written on first use, ~40 s). Work files go to
``benchmarks/work/big-<pid>/`` and are deleted at the end (``--keep`` keeps them). Needs
GNU time (``/usr/bin/time``). Exits 0 whatever the figures: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import bench_backends as bb  # noqa: E402

SMALL = "summary.json"
MB = 1_000_000
RSS_TARGET_MB = 300
CAT_LOCAL_S = 0.3
RAW_RATIO = 2.0
BYTES_TARGET = 1 * MB


from bench_many import env, resutil_cmd  # noqa: E402 - one way to run the console script


def log(msg: str) -> None:
    print(msg, flush=True)


def run_timed(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, stdout) of a command under /usr/bin/time -v."""
    subprocess.run(["sync"], check=False)
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *args], cwd=cwd, capture_output=True,
                       text=True, env=env())
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return took, int(m.group(1)) / 1000 if m else float("nan"), r.stdout


def ensure_data(data: Path) -> Path:
    b = data / "B"
    if not (b / "metrics.csv").exists():
        log(f"generating B into {data} (once) ...")
        subprocess.run([sys.executable, str(HERE / "generate.py"), "--out", str(data),
                        "--only", "B"], check=True)
    return b


def make_experiment(project: Any, source: Path) -> str:
    """B's files (hard links) plus a 1 KB summary, as a finished experiment."""
    from resutil.metadata import ExpMeta, write_meta

    name = project.workspace.create("B").name
    folder = project.workspace.path(name)
    for f in sorted(source.iterdir()):
        os.link(f, folder / f.name)
    (folder / SMALL).write_text(json.dumps({"epoch": 90, "loss": [0.1 * i for i in range(60)],
                                            "note": "x" * 200})[:1000] + "\n")
    write_meta(folder, ExpMeta(name=name, comment="B", status="finished",
                               started_at=datetime.now().isoformat(timespec="seconds")))
    return name


class Counting:
    """Counts the bytes a storage object hands over (instance attributes: the class and
    every other instance are untouched)."""

    def __init__(self, storage: Any) -> None:
        self.bytes = 0
        self.calls: list[str] = []
        for attr in ("read_range", "read_bytes"):
            original = getattr(storage, attr)

            def counted(*a: Any, _orig: Callable = original, _attr: str = attr, **k: Any) -> Any:
                data = _orig(*a, **k)
                self.bytes += len(data)
                self.calls.append(f"{_attr} {len(data)}")
                return data

            setattr(storage, attr, counted)
        download = storage.download

        def counted_download(folder: str, name: str, dest: Path, *a: Any, **k: Any) -> Any:
            out = download(folder, name, dest, *a, **k)
            self.bytes += Path(dest).stat().st_size
            self.calls.append(f"download {name}")
            return out

        storage.download = counted_download


def raw_ranged(kind: str, backend: Any, project: Any, archive: Any, start: int, length: int
               ) -> Callable[[], bytes]:
    """One ranged request of the archive through the SDK's own client (warm, as resutil's)."""
    folder = project.config.project_name
    st = project.storage
    if kind == "local":
        path = st.root / folder / archive.name

        def local() -> bytes:
            fd = os.open(path, os.O_RDONLY)
            try:
                return os.pread(fd, length, start)
            finally:
                os.close(fd)

        return local
    if kind == "gcs":
        blob = backend.bucket.blob(f"{folder}/{archive.name}")
        return lambda: blob.download_as_bytes(start=start, end=start + length - 1,
                                              checksum=None, raw_download=True)
    if kind == "gdrive":
        f = st._file(folder, archive.name)
        files = backend.service.files()  # (built once: ~6 ms, as resutil keeps its own)

        def drive() -> bytes:
            request = files.get_media(fileId=f["id"], supportsAllDrives=True)
            request.headers["Range"] = f"bytes={start}-{start + length - 1}"
            return request.execute(http=backend.http)

        return drive
    entry = st._in_folder(folder, False, lambda fid: st._find(fid, archive.name)[0])

    def box() -> bytes:
        stream = backend.client.downloads.download_file(
            entry.id, range=f"bytes={start}-{start + length - 1}")
        return stream.read()

    return box


def medians(fns: list[Callable[[], Any]], n: int) -> list[float]:
    """Median seconds of each of ``fns``, run in turns (so that a busy moment of the
    machine falls on all of them alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, got in zip(fns, times):
            t = time.perf_counter()
            fn()
            got.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def bench_backend(kind: str, work: Path, source: Path, repeat: int, out: dict) -> None:
    from resutil.partial import open_file
    from resutil.project import Project

    backend = None
    if kind == "local":
        config = {"path": str(work / "remote")}
        (work / "remote").mkdir(parents=True)
        storage_type = "local"
    else:
        backend = bb.BACKEND_CLASSES[kind](work)
        backend.start()
        config = backend.new_remote()
        storage_type = kind
    try:
        a = bb.write_project(work / "a", storage_type, config)
        name = make_experiment(Project.load(a), source)
        wall, rss, _ = run_timed([*resutil_cmd(), "push", name], a)
        out["push_s"], out["push_rss_mb"] = wall, rss
        log(f"  push of B: {wall:.1f} s, peak RSS {rss:.0f} MB")

        expected = (Project.load(a).workspace.path(name) / SMALL).read_text()
        project = Project.load(bb.write_project(work / "b", storage_type, config))
        if backend is not None:
            backend.raw_begin(project)
        exp = project.remote.require(name)  # (listed: what any command does first)
        counting = Counting(project.storage)
        assert open_file(project, name, SMALL).read().decode() == expected
        out["bytes_first"], out["requests_first"] = counting.bytes, len(counting.calls)
        counting.bytes, counting.calls = 0, []
        assert open_file(project, name, SMALL).read().decode() == expected
        out["bytes"], out["requests"] = counting.bytes, len(counting.calls)
        member = project.remote.member_index(exp).members[SMALL]
        raw = raw_ranged(kind, backend, project, exp.archive, member.offset, member.csize)
        assert len(raw()) == member.csize
        ours, theirs = medians([lambda: open_file(project, name, SMALL).read(), raw], repeat)
        out["open_s"], out["raw_s"] = ours, theirs
        log(f"  one file in-process {ours * 1000:.2f} ms vs one raw ranged request "
            f"{theirs * 1000:.2f} ms ({ours / theirs:.2f}x); {out['bytes']} bytes in "
            f"{out['requests']} request(s); the first read, with the sidecar: "
            f"{out['bytes_first']} bytes in {out['requests_first']}")

        clone = bb.write_project(work / "b2", storage_type, config)
        cold, _, text = run_timed([*resutil_cmd(), "cat", name, SMALL], clone)
        assert text == expected, "resutil cat printed something else"
        warm = [run_timed([*resutil_cmd(), "cat", name, SMALL], clone)[0] for _ in range(5)]
        out["cat_cli_cold_s"], out["cat_cli_s"] = cold, statistics.median(warm)
        log(f"  resutil cat {SMALL}: first in a fresh clone {cold:.3f} s, then "
            f"{out['cat_cli_s']:.3f} s")

        c = bb.write_project(work / "c", storage_type, config)
        wall, rss, _ = run_timed([*resutil_cmd(), "pull", name], c)
        out["pull_s"], out["pull_rss_mb"] = wall, rss
        log(f"  pull of B: {wall:.1f} s, peak RSS {rss:.0f} MB")
        shutil.rmtree(c / "results", ignore_errors=True)
    finally:
        if backend is not None:
            backend.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=HERE / "data" / "scale-1")
    ap.add_argument("--backends", default="local,gcs,gdrive,box")
    ap.add_argument("--repeat", type=int, default=30, help="in-process reads, median")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    source = ensure_data(args.data)
    size = sum(f.stat().st_size for f in source.iterdir())
    work = HERE / "work" / f"big-{os.getpid()}"
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    log(f"B: {size / MB:.0f} MB; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    try:
        for kind in [b.strip() for b in args.backends.split(",") if b.strip()]:
            log(f"{kind}:")
            results[kind] = {}
            try:
                bench_backend(kind, work / kind, source, args.repeat, results[kind])
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                log(f"  failed: {type(e).__name__}: {e}")
            shutil.rmtree(work / kind, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    log(f"\n{'backend':8s} {'push s':>7s} {'push RSS':>9s} {'pull s':>7s} {'pull RSS':>9s} "
        f"{'cat s':>6s} {'1st cat':>7s} {'read ms':>8s} {'raw ms':>7s} {'ratio':>6s} "
        f"{'bytes':>7s}  verdicts")
    for kind, r in results.items():
        if "pull_rss_mb" not in r:
            continue
        rss = max(r["push_rss_mb"], r["pull_rss_mb"])
        verdicts = [f"RSS {'PASS' if rss < RSS_TARGET_MB else 'FAIL'}",
                    f"bytes {'PASS' if r['bytes_first'] < BYTES_TARGET else 'FAIL'}"]
        if kind == "local":
            ok = r["cat_cli_s"] < CAT_LOCAL_S
            verdicts.append(f"cat < {CAT_LOCAL_S} s {'PASS' if ok else 'FAIL'}")
        else:
            ratio = r["open_s"] / r["raw_s"]
            verdicts.append(f"< {RAW_RATIO:g}x raw {'PASS' if ratio < RAW_RATIO else 'FAIL'}")
        log(f"{kind:8s} {r['push_s']:7.1f} {r['push_rss_mb']:7.0f}MB {r['pull_s']:7.1f} "
            f"{r['pull_rss_mb']:7.0f}MB {r['cat_cli_s']:6.3f} {r['cat_cli_cold_s']:7.3f} "
            f"{r['open_s'] * 1000:8.2f} {r['raw_s'] * 1000:7.2f} "
            f"{r['open_s'] / r['raw_s']:5.2f}x {r['bytes_first']:7d}  " + ", ".join(verdicts))
    log(f"(whole run {time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
