#!/usr/bin/env python3
"""Benchmark resutil's core loop (push / pull, local storage) against tar, cp and DVC.

Builds the seeded data of ``generate.py`` once (cached under ``benchmarks/data/``), then for
each experiment (A: 20,000 small files, B: three large files) and each repetition runs,
every time into FRESH folders:

* references: ``tar -cf``, ``tar -xf``, ``cp -r`` of the same folder on the same disk;
* resutil: ``resutil push NAME`` in a fresh project, ``resutil pull NAME`` in a second
  fresh project pointing at the same storage folder;
* DVC 3.67 (unless ``--skip-dvc``): ``dvc add`` + ``dvc push`` to a local remote, and
  ``dvc pull`` in a fresh clone;

plus ``python -c "import resutil"`` wall time and a check that no cloud SDK gets imported.
It prints medians, ratios against the references and PASS/FAIL per target, and exits 0
whatever the figures are: it is a measurement, not a test.

Everything runs warm-cache (nothing is dropped from the page cache); ``sync`` runs, untimed,
before each measured command so that write-back of the previous step does not leak into
the next one, and the output of each step is deleted (then synced) once measured.

Usage::

    python benchmarks/bench_core.py [--scale F] [--repeat N] [--skip-dvc] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DVC_VENV = HERE / ".venv-dvc"
DVC_SPEC = "dvc==3.67.*"
PROJECT = "bench"
EXP_FILE = "resutil-exp.yaml"
CLOUD_PREFIXES = ("google", "box_sdk_gen", "boxsdk", "pydrive2", "googleapiclient")
IMPORT_RUNS = 10

# Figures quoted in the issue (medians, seconds), printed for orientation only.
ISSUE_FIGURES = {
    "A.tar_c": 0.28, "A.tar_x": 0.49, "A.cp": 0.64, "A.dvc_addpush": 10.9, "A.dvc_pull": 13.5,
    "B.cp": 0.82, "B.dvc_addpush": 15.5, "B.dvc_pull": 2.2,
}

LABELS = {
    "tar_c": "tar -cf",
    "tar_x": "tar -xf",
    "cp": "cp -r",
    "push": "resutil push",
    "pull": "resutil pull",
    "dvc_add": "dvc add",
    "dvc_push": "dvc push",
    "dvc_addpush": "dvc add + dvc push",
    "dvc_pull": "dvc pull",
}


# --------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(msg, flush=True)


def sync() -> None:
    os.sync()


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(v), v[3] + (v[4] if len(v) > 4 else 0)  # total, idle + iowait


SETTLE = {"waits": 0, "seconds": 0.0, "budget": 120.0}


def settle(max_wait: float = 10.0, busy_limit: float = 0.25, window: float = 0.25) -> None:
    """Sync, then wait (at most ``max_wait``) until the CPUs are idle for one ``window``.

    Other processes on a 2-core machine (a test suite, another benchmark) would otherwise
    land inside a measurement. Nothing of this is timed; waits are counted in SETTLE, and
    once they add up to SETTLE["budget"] seconds the run stops waiting.
    """
    os.sync()
    if SETTLE["seconds"] >= SETTLE["budget"]:
        return
    t0 = time.perf_counter()
    while True:
        a = _cpu_times()
        time.sleep(window)
        b = _cpu_times()
        if a is None or b is None or b[0] == a[0]:
            return
        busy = 1 - (b[1] - a[1]) / (b[0] - a[0])
        waited = time.perf_counter() - t0
        if busy < busy_limit or waited > max_wait:
            if waited > 2 * window:
                SETTLE["waits"] += 1
                SETTLE["seconds"] += waited
            return


def spread_dir(path: Path) -> None:
    """Mark ``path`` as a top of a directory hierarchy (ext4 ``chattr +T``).

    ext4 then spreads the subfolders made in it over block groups (the Orlov allocator), so
    a fresh folder rarely shares its inode group with files deleted moments ago. On ext4
    without a journal, as on this machine, making a file skips, one by one, every inode
    freed in the last 60 s (360 s while its inode table block is dirty): creating 20,000
    files in a group just emptied of 20,000 others takes 10-20 s instead of 0.5 s.
    """
    subprocess.run(["chattr", "+T", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)


def create_cost(parent: Path, tag: str, dirs: int = 3, files: int = 400) -> float:
    """Seconds to create one empty file, worst of ``dirs`` fresh folders under ``parent``."""
    worst = 0.0
    for k in range(dirs):
        d = parent / f"probe-{tag}-{k}"
        d.mkdir()
        t = time.perf_counter()
        for i in range(files):
            os.close(os.open(d / f"p{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
        worst = max(worst, (time.perf_counter() - t) / files)
    return worst


def wait_for_fast_create(parent: Path, limit: float = 100e-6, max_wait: float = 400.0) -> float:
    """Wait until creating files is fast again (files deleted recently slow it down: see
    spread_dir); returns the seconds waited. The probe files stay until the phase ends."""
    t0 = time.perf_counter()
    n = 0
    while True:
        cost = create_cost(parent, str(n))
        waited = time.perf_counter() - t0
        if cost < limit or waited > max_wait:
            if n:
                log(f"  (waited {waited:.0f} s for the filesystem: creating a file took "
                    f"{cost * 1e6:.0f} us, {'now fine' if cost < limit else 'giving up'})")
            return waited
        if n == 0:
            log(f"  creating a file takes {cost * 1e6:.0f} us (files deleted in the last minutes, "
                "see README); waiting for that to pass ...")
        n += 1
        time.sleep(10)


def warm(folder: Path) -> float:
    """Read every file of ``folder`` once (untimed), so the measurements start warm-cache."""
    t = time.perf_counter()
    buf = bytearray(8 << 20)
    for root, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
    return time.perf_counter() - t


def rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():  # read-only files inside (e.g. a DVC cache): make writable, retry
            subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
            shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def drop(*paths: Path) -> None:
    """Delete measured outputs, then sync so the deletion does not weigh on the next step."""
    for p in paths:
        rmtree(p)
    sync()


class CommandFailed(RuntimeError):
    pass


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None, check: bool = True,
        ) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
        raise CommandFailed(f"{' '.join(cmd)} (in {cwd}) exited {p.returncode}:\n  " + "\n  ".join(tail))
    return p


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    """Wall time of one command, after an untimed sync and wait for idle CPUs."""
    settle()
    t = time.perf_counter()
    run(cmd, cwd=cwd, env=env)
    return time.perf_counter() - t


def tree_stats(folder: Path, skip: tuple[str, ...] = ()) -> tuple[int, int]:
    """(file count, total bytes) of a tree, skipping top-level names in ``skip``."""
    count = total = 0
    for root, dirs, files in os.walk(folder):
        if root == str(folder):
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        for f in files:
            count += 1
            total += os.lstat(os.path.join(root, f)).st_size
    return count, total


def du(folder: Path) -> int:
    return tree_stats(folder)[1] if folder.exists() else 0


def link_copy(src: Path, dest: Path) -> None:
    """A hard-linked copy of ``src`` (same inodes, so the same warm page cache); cp if not possible."""
    if run(["cp", "-al", str(src), str(dest)], check=False).returncode != 0:
        rmtree(dest)
        run(["cp", "-r", str(src), str(dest)])


def experiment_name(rep: int, which: str) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    a, b = divmod(rep, 26)
    prefix = "bench" + letters[b] if a == 0 else "ben" + letters[a % 26] + letters[b] + "x"
    return f"{prefix}_20250101T0000{rep % 60:02d}_{which}"


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------- data
def pick_numpy_python(preferred: list[str]) -> str:
    for py in preferred:
        if py and run([py, "-c", "import numpy"], check=False).returncode == 0:
            return py
    sys.exit("no python with numpy found to run generate.py; pip install numpy")


def ensure_data(data_root: Path, scale: float, python: str) -> tuple[Path, dict]:
    """The generated data for ``scale``, made once and reused while generate.py is unchanged."""
    gen = HERE / "generate.py"
    digest = hashlib.sha256(gen.read_bytes()).hexdigest()[:16]
    folder = data_root / f"scale-{scale:g}"
    marker = folder / "complete.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("generator") == digest and (folder / "A").is_dir() and (folder / "B").is_dir():
            log(f"data: reusing {folder}")
            return folder, info
        log(f"data: {folder} is stale (generate.py changed); regenerating")
    rmtree(folder)
    folder.mkdir(parents=True)
    log(f"data: generating into {folder} (scale {scale:g}) ...")
    p = run([python, str(gen), "--out", str(folder), "--scale", str(scale)])
    sys.stdout.write(p.stdout)
    info = {"generator": digest, "scale": scale}
    for which in ("A", "B"):
        n, size = tree_stats(folder / which)
        info[which] = {"files": n, "bytes": size}
    marker.write_text(json.dumps(info, indent=1))
    return folder, info


# --------------------------------------------------------------------------- tools
def find_resutil(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for cand in (Path(sys.executable).parent / "resutil", REPO / ".venv" / "bin" / "resutil"):
        if cand.exists():
            return str(cand)
    return shutil.which("resutil")


def resutil_works(exe: str) -> tuple[bool, str]:
    p = run([exe, "--help"], check=False)
    if p.returncode == 0:
        return True, ""
    return False, (p.stdout + p.stderr).strip().splitlines()[-1:][0] if (p.stdout + p.stderr).strip() else f"exit {p.returncode}"


def compile_bytecode(python: str) -> str | None:
    """Compile the bytecode of the resutil that ``python`` imports, as an installation has
    it (pip compiles it; Python caches it after a first run). Where PYTHONDONTWRITEBYTECODE
    is set (some sandboxes and CI) and a checkout has none, every timed command would
    compile resutil's modules again: ~45 ms of each push. Returns the package folder."""
    p = run([python, "-c", "import os, resutil; print(os.path.dirname(resutil.__file__))"],
            check=False)
    if p.returncode != 0:
        return None
    pkg = p.stdout.strip()
    run([python, "-m", "compileall", "-q", pkg], check=False)  # (a read-only install: as is)
    return pkg


def ensure_dvc(explicit: str | None) -> str:
    if explicit:
        return explicit
    exe = DVC_VENV / "bin" / "dvc"
    if not exe.exists():
        log(f"dvc: installing {DVC_SPEC} into {DVC_VENV} ...")
        run([sys.executable if sys.version_info >= (3, 9) else "python3", "-m", "venv", str(DVC_VENV)])
        run([str(DVC_VENV / "bin" / "pip"), "install", "-q", DVC_SPEC])
    return str(exe)


# --------------------------------------------------------------------------- measurements
class Bench:
    def __init__(self, args: argparse.Namespace, data: Path, work: Path) -> None:
        self.args = args
        self.data = data
        self.work = work
        self.samples: dict[str, list[float]] = {}
        self.info: dict[str, dict] = {}
        self.errors: list[str] = []
        self.resutil: str | None = None
        self.dvc: str | None = None
        self.dvc_env = dict(os.environ, DVC_NO_ANALYTICS="1")
        self.pending: list[Path] = []  # outputs deleted only once the phase is over
        self.defer = False
        self.git_env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
                            GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")

    def add(self, key: str, seconds: float) -> None:
        self.samples.setdefault(key, []).append(seconds)

    def note(self, key: str, **kw) -> None:
        self.info.setdefault(key, {}).update(kw)

    def fresh(self, which: str, name: str) -> Path:
        """A new, empty folder for one step's output, in its own (spread) inode group."""
        parent = self.work / which
        if not parent.exists():
            parent.mkdir(parents=True)
            spread_dir(parent)
        d = parent / name
        assert not d.exists(), d
        d.mkdir()
        return d

    def drop(self, *paths: Path) -> None:
        """Delete measured outputs now, or at the end of a many-files phase (see spread_dir)."""
        if self.defer:
            self.pending.extend(paths)
        else:
            drop(*paths)

    def end_phase(self) -> None:
        drop(*self.pending)
        self.pending.clear()

    def verify(self, what: str, folder: Path, which: str) -> None:
        want = self.info["data"][which]
        got = tree_stats(folder, skip=(EXP_FILE, ".resutil"))
        if got != (want["files"], want["bytes"]):
            msg = f"{what}: {folder} holds {got[0]} files / {got[1]} bytes, expected {want['files']} / {want['bytes']}"
            self.errors.append(msg)
            log("  !! " + msg)

    # ---- references
    def references(self, which: str, rep: int) -> None:
        src = self.data / which
        d = self.fresh(which, f"r{rep}-tar")
        tarball = d / f"{which}.tar"
        self.add(f"{which}.tar_c", timed(["tar", "-cf", str(tarball), "-C", str(self.data), which]))
        self.note(f"{which}.tar", bytes=tarball.stat().st_size)
        x = self.fresh(which, f"r{rep}-untar")
        self.add(f"{which}.tar_x", timed(["tar", "-xf", str(tarball), "-C", str(x)]))
        self.verify("tar -xf", x / which, which)
        self.drop(d, x)
        c = self.fresh(which, f"r{rep}-cp")
        self.add(f"{which}.cp", timed(["cp", "-r", str(src), str(c / which)]))
        self.verify("cp -r", c / which, which)
        self.drop(c)

    # ---- resutil
    def resutil_init(self, proj: Path, remote: Path) -> None:
        run([self.resutil, "init", "--project", PROJECT, "--results-dir", "results", "--storage", "local",
             "--path", str(remote), "--yes"], cwd=proj)
        if not (proj / "resutil-conf.yaml").exists():
            raise CommandFailed(f"resutil init did not create {proj / 'resutil-conf.yaml'}")

    def resutil_round(self, which: str, rep: int) -> None:
        name = experiment_name(rep, which)
        remote = self.fresh(which, f"r{rep}-resutil-remote")
        p1 = self.fresh(which, f"r{rep}-resutil-push")
        p2 = self.fresh(which, f"r{rep}-resutil-pull")
        try:
            self.resutil_init(p1, remote)
            (p1 / "results").mkdir(exist_ok=True)
            link_copy(self.data / which, p1 / "results" / name)
            self.add(f"{which}.push", timed([self.resutil, "push", name], cwd=p1))
            self.note(f"{which}.resutil_remote", bytes=du(remote))
            self.resutil_init(p2, remote)
            self.add(f"{which}.pull", timed([self.resutil, "pull", name], cwd=p2))
            self.verify("resutil pull", p2 / "results" / name, which)
        except CommandFailed as e:
            self.errors.append(f"resutil {which} rep {rep}: {e}")
            log(f"  !! resutil {which} rep {rep}: {e}")
        finally:
            self.drop(p1, p2, remote)

    # ---- DVC
    def dvc_round(self, which: str, rep: int) -> None:
        dvc = self.dvc
        remote = self.fresh(which, f"r{rep}-dvc-remote")
        repo = self.fresh(which, f"r{rep}-dvc-repo")
        clone = self.work / which / f"r{rep}-dvc-clone"
        try:
            run(["git", "init", "-q"], cwd=repo, env=self.git_env)
            run([dvc, "init", "-q"], cwd=repo, env=self.dvc_env)
            run([dvc, "config", "core.analytics", "false"], cwd=repo, env=self.dvc_env)
            run([dvc, "config", "core.check_update", "false"], cwd=repo, env=self.dvc_env)
            run([dvc, "remote", "add", "-d", "local", str(remote)], cwd=repo, env=self.dvc_env)
            # A real copy (untimed): DVC moves files into its cache and changes their mode,
            # which must not reach the shared data through hard links.
            run(["cp", "-r", str(self.data / which), str(repo / which)])
            t_add = timed([dvc, "add", "-q", which], cwd=repo, env=self.dvc_env)
            t_push = timed([dvc, "push", "-q"], cwd=repo, env=self.dvc_env)
            self.add(f"{which}.dvc_add", t_add)
            self.add(f"{which}.dvc_push", t_push)
            self.add(f"{which}.dvc_addpush", t_add + t_push)
            self.note(f"{which}.dvc_remote", bytes=du(remote))
            run(["git", "add", "-A"], cwd=repo, env=self.git_env)
            run(["git", "commit", "-q", "-m", "data"], cwd=repo, env=self.git_env)
            run(["git", "clone", "-q", str(repo), str(clone)], env=self.git_env)
            self.drop(repo)
            self.add(f"{which}.dvc_pull", timed([dvc, "pull", "-q"], cwd=clone, env=self.dvc_env))
            self.verify("dvc pull", clone / which, which)
        except CommandFailed as e:
            self.errors.append(f"dvc {which} rep {rep}: {e}")
            log(f"  !! dvc {which} rep {rep}: {e}")
        finally:
            self.drop(repo, clone, remote)

    # ---- import
    def imports(self, python: str) -> None:
        def wall(code: str) -> list[float]:
            run([python, "-c", code])  # warm-up (bytecode caches)
            out = []
            for _ in range(IMPORT_RUNS):
                t = time.perf_counter()
                run([python, "-c", code])
                out.append(time.perf_counter() - t)
            return out

        self.samples["import.python"] = wall("pass")
        self.samples["import.resutil"] = wall("import resutil")
        check = ("import {mod}, sys; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))")
        for mod in ("resutil", "resutil.cli"):
            p = run([python, "-c", check.format(mod=mod, prefixes=CLOUD_PREFIXES)], check=False)
            if p.returncode == 0:
                self.note(f"cloud.{mod}", modules=eval(p.stdout.strip() or "[]"))  # a printed list
            else:
                self.note(f"cloud.{mod}", error=(p.stderr.strip().splitlines() or ["?"])[-1])
        if "error" not in self.info.get("cloud.resutil.cli", {}):
            self.samples["import.resutil_cli"] = wall("import resutil.cli")
            if self.resutil:
                self.samples["cli.help"] = []
                run([self.resutil, "--help"])
                for _ in range(IMPORT_RUNS):
                    t = time.perf_counter()
                    run([self.resutil, "--help"])
                    self.samples["cli.help"].append(time.perf_counter() - t)


# --------------------------------------------------------------------------- report
def fmt_s(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.2f}")


def evaluate(b: Bench, skip_dvc: bool) -> list[dict]:
    """One row per measured figure; rows with a target carry PASS/FAIL."""
    m = {k: median(v) for k, v in b.samples.items()}
    rows: list[dict] = []

    def row(op, key, ref_key=None, target=None, kind=None):
        """kind: 'max' -> op/ref <= target; 'faster' -> ref/op >= target; None -> info."""
        val = m.get(key)
        ref = m.get(ref_key) if ref_key else None
        r = {"operation": op, "key": key, "median_s": val, "n": len(b.samples.get(key, [])),
             "min_s": min(b.samples[key]) if b.samples.get(key) else None,
             "reference": ref_key and f"{label(ref_key)}", "reference_s": ref, "ratio": None,
             "target": None, "result": ""}
        if val is not None and ref:
            if kind == "faster":
                r["ratio"] = ref / val if val else None
                r["ratio_text"] = ("-" if not r["ratio"] else f"{r['ratio']:.1f}x faster" if r["ratio"] >= 1
                                   else f"{1 / r['ratio']:.1f}x slower")
            else:
                r["ratio"] = val / ref
                r["ratio_text"] = f"{r['ratio']:.2f}x"
        if kind == "max":
            r["target"] = f"<= {target:g}x"
        elif kind == "faster":
            r["target"] = f">= {target:g}x faster" if target != 1 else "no slower"
        if kind:
            if r["ratio"] is None:
                r["result"] = "n/a"
            elif kind == "max":
                r["result"] = "PASS" if r["ratio"] <= target else "FAIL"
            else:
                r["result"] = "PASS" if r["ratio"] >= target else "FAIL"
        rows.append(r)

    for which in ("A", "B"):
        for k in ("tar_c", "tar_x", "cp"):
            row(f"{which} {LABELS[k]}", f"{which}.{k}")
        if not skip_dvc:
            for k in ("dvc_add", "dvc_push", "dvc_addpush", "dvc_pull"):
                row(f"{which} {LABELS[k]}", f"{which}.{k}")
    # Targets
    row("A resutil push", "A.push", "A.tar_c", 3, "max")
    row("A resutil pull", "A.pull", "A.tar_x", 3, "max")
    row("B resutil push", "B.push", "B.cp", 2, "max")
    row("B resutil pull", "B.pull", "B.cp", 2, "max")
    if not skip_dvc:
        row("A resutil push vs DVC", "A.push", "A.dvc_addpush", 3, "faster")
        row("B resutil push vs DVC", "B.push", "B.dvc_addpush", 3, "faster")
        row("A resutil pull vs DVC", "A.pull", "A.dvc_pull", 3, "faster")
        row("B resutil pull vs DVC", "B.pull", "B.dvc_pull", 1, "faster")
    # import
    r = {"operation": 'python -c "import resutil"', "key": "import.resutil",
         "median_s": m.get("import.resutil"), "n": len(b.samples.get("import.resutil", [])),
         "min_s": min(b.samples["import.resutil"]) if b.samples.get("import.resutil") else None,
         "reference": "python -c pass", "reference_s": m.get("import.python"), "ratio": None,
         "target": "< 0.150 s", "result": "n/a"}
    if r["median_s"] is not None:
        r["result"] = "PASS" if r["median_s"] < 0.150 else "FAIL"
    rows.append(r)
    for mod, is_target in (("resutil", True), ("resutil.cli", False)):
        c = b.info.get(f"cloud.{mod}", {})
        mods = c.get("modules")
        rows.append({"operation": f"cloud SDKs after import {mod}", "key": f"cloud.{mod}",
                     "median_s": None, "n": 0, "reference": None, "reference_s": None, "ratio": None,
                     "ratio_text": (", ".join(mods[:4]) + ("..." if len(mods) > 4 else "")) if mods
                     else ("none" if mods is not None else c.get("error", "-")[:40]),
                     "target": "none" if is_target else "none (extra)",
                     "result": "n/a" if mods is None else ("PASS" if not mods else "FAIL")})
    for key, op in (("import.resutil_cli", 'python -c "import resutil.cli"'), ("cli.help", "resutil --help")):
        if key in b.samples:
            row(op, key)
    return rows


def label(key: str) -> str:
    which, _, k = key.partition(".")
    return f"{which} {LABELS.get(k, k)}"


def print_table(rows: list[dict]) -> None:
    head = ("operation", "median s", "min s", "reference", "ref s", "ratio", "target", "result")
    lines = []
    for r in rows:
        lines.append((r["operation"], fmt_s(r["median_s"]), fmt_s(r.get("min_s")), r.get("reference") or "",
                      fmt_s(r["reference_s"]) if r.get("reference") else "",
                      r.get("ratio_text", ""), r.get("target") or "", r.get("result", "")))
    w = [max(len(str(x[i])) for x in lines + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i in (0, 3, 6) else '>'}{w[i]}}}" for i in range(len(head)))
    print(fmt.format(*head))
    print("  ".join("-" * x for x in w))
    for x in lines:
        print(fmt.format(*x))


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="data scale (0.05 for a quick run)")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions per operation (median; default 5)")
    ap.add_argument("--repeat-b", type=int,
                    help="repetitions for B (default: --repeat, at most 5: B writes ~10 GB a repetition)")
    ap.add_argument("--skip-dvc", action="store_true", help="do not measure DVC")
    ap.add_argument("--skip-resutil", action="store_true", help="do not measure resutil push/pull")
    ap.add_argument("--only", choices=("A", "B"), help="measure one experiment only")
    ap.add_argument("--json", type=Path, help="write all figures to this JSON file")
    ap.add_argument("--workdir", type=Path,
                    help="put data/ and work/ here instead of benchmarks/data and benchmarks/work")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--settle", type=float, default=120.0, metavar="SECONDS",
                    help="at most this long in all, wait for idle CPUs before measurements (0: never)")
    ap.add_argument("--resutil", help="resutil executable (default: the project's .venv)")
    ap.add_argument("--dvc", help="dvc executable (default: benchmarks/.venv-dvc, installed if missing)")
    args = ap.parse_args(argv)
    if not 0 < args.scale <= 1 or args.repeat < 1:
        ap.error("--scale must be in (0, 1] and --repeat >= 1")

    SETTLE["budget"] = args.settle
    data_root = (args.workdir / "data") if args.workdir else HERE / "data"
    work_root = (args.workdir / "work") if args.workdir else HERE / "work"
    started = datetime.now()
    work = work_root / f"run-{started:%Y%m%dT%H%M%S}-{os.getpid()}"

    b = Bench(args, Path(), work)
    b.resutil = None if args.skip_resutil else find_resutil(args.resutil)
    python = str(Path(b.resutil).parent / "python") if b.resutil and (Path(b.resutil).parent / "python").exists() \
        else sys.executable
    if b.resutil:
        ok, why = resutil_works(b.resutil)
        if not ok:
            log(f"resutil: {b.resutil} does not work yet ({why}); skipping push/pull")
            b.errors.append(f"resutil CLI unavailable: {why}")
            b.resutil = None
    elif not args.skip_resutil:
        log("resutil: no executable found; skipping push/pull")
    if b.resutil:
        b.note("bytecode", package=compile_bytecode(python))
        log(f"resutil: {b.resutil}, bytecode compiled in {b.info['bytecode']['package']}")
    if not args.skip_dvc:
        b.dvc = ensure_dvc(args.dvc)

    folder, datainfo = ensure_data(data_root, args.scale, pick_numpy_python([python, sys.executable, "python3"]))
    b.data = folder
    b.info["data"] = {k: datainfo[k] for k in ("A", "B")}
    need = 3.2 * datainfo["B"]["bytes"] if args.only != "A" else 4 * datainfo["A"]["bytes"]
    free = shutil.disk_usage(data_root).free
    if free < need:
        log(f"warning: {free / 1e9:.1f} GB free, the run needs about {need / 1e9:.1f} GB")
    work.mkdir(parents=True)

    repeats = {"A": args.repeat, "B": args.repeat_b or min(args.repeat, 5)}
    log(f"work: {work}; repeat A {repeats['A']}, B {repeats['B']}; scale {args.scale:g}; warm cache")
    t_all = time.perf_counter()
    try:
        for which in ("A", "B"):
            if args.only and args.only != which:
                continue
            d = datainfo[which]
            n = repeats[which]
            # Many files: keep every output until the phase is over, as deleting many files
            # slows down creating files for a minute or more (see spread_dir).
            b.defer = d["files"] >= 500
            t_warm = warm(folder / which)
            if b.defer:
                parent = work / which
                parent.mkdir(parents=True)
                spread_dir(parent)
                b.info.setdefault("fs_wait", {})[which] = round(wait_for_fast_create(parent), 1)
            log(f"== {which}: {d['files']} files, {d['bytes'] / 1e6:.1f} MB (warm-up read {t_warm:.1f} s)")
            for rep in range(n):
                t0 = time.perf_counter()
                # Alternate the order, so that neither side always follows the other's deletions.
                steps = [b.references] + ([b.resutil_round] if b.resutil else [])
                for step in (steps if rep % 2 == 0 else steps[::-1]):
                    step(which, rep)
                if b.dvc:
                    b.dvc_round(which, rep)
                got = "  ".join(f"{k.split('.', 1)[1]} {v[-1]:.3f}" for k, v in b.samples.items()
                                if k.startswith(which + ".") and len(v) == rep + 1
                                and not k.endswith(("dvc_add", "dvc_push")))
                log(f"  rep {rep + 1}/{n} ({time.perf_counter() - t0:.0f} s): {got}")
            b.end_phase()
            rmtree(work / which)
        if b.resutil or Path(python).exists():
            log("== import time")
            b.imports(python)
    finally:
        if not args.keep:
            rmtree(work)
            try:
                work_root.rmdir()
            except OSError:
                pass
    total = time.perf_counter() - t_all

    rows = evaluate(b, skip_dvc=not b.dvc)
    print()
    print(f"resutil core-loop benchmark: scale {args.scale:g}, medians of {repeats['A']} (A) / {repeats['B']} (B) "
          f"repetitions, warm cache ({total:.0f} s)")
    if SETTLE["waits"]:
        print(f"(waited {SETTLE['seconds']:.0f} s in total, {SETTLE['waits']} times, for other processes to leave "
              "the CPUs idle before a measurement)")
    print_table(rows)
    if b.errors:
        print("\nerrors:")
        for e in b.errors:
            print("  - " + e.replace("\n", "\n    "))
    verdicts = [r["result"] for r in rows if r["result"] in ("PASS", "FAIL", "n/a") and r.get("target")]
    print(f"\ntargets: {verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL, {verdicts.count('n/a')} n/a")

    if args.json:
        out = {
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(total, 1),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "versions": versions(b, python),
            "data": b.info.get("data"),
            "sizes": {k: v for k, v in b.info.items() if k not in ("data", "fs_wait")},
            "samples": b.samples,
            "repeats": repeats,
            "settle": SETTLE,
            "fs_wait": b.info.get("fs_wait"),
            "medians": {k: median(v) for k, v in b.samples.items()},
            "rows": rows,
            "errors": b.errors,
            "issue_figures": ISSUE_FIGURES,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"figures written to {args.json}")
    return 0


def versions(b: Bench, python: str) -> dict:
    v = {}
    p = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False)
    v["resutil_commit"] = p.stdout.strip() or None
    p = run([python, "-c", "import importlib.metadata as m; print(m.version('resutil'))"], check=False)
    v["resutil"] = p.stdout.strip() or None
    if b.dvc:
        v["dvc"] = run([b.dvc, "--version"], check=False, env=b.dvc_env).stdout.strip() or None
    v["tar"] = run(["tar", "--version"], check=False).stdout.splitlines()[0]
    return v


if __name__ == "__main__":
    sys.exit(main())
