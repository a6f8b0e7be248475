"""How long `resutil pipeline run` takes when nothing changed, for a 50-step pipeline.

Builds a throwaway project (`resutil init`, local storage) with a synthetic pipeline of cheap
steps (`python -c` writing one file): CHAINS chains of LENGTH steps, each step also reading
the step beside it in the previous chain every third level, and one last step needing every
chain's end. Runs it once (every step runs), then times the no-op rerun (every step reused)
as a subprocess, median of 3, and compares it with the 3 s target.

    python benchmarks/bench_pipeline.py [--chains 7] [--length 7] [--repeat 3] [--no-git]
                                        [--history N] [--keep DIR]

The project is a git repository with a commit and an uncommitted change (so the code
fingerprint does its real work); --history adds N finished non-pipeline experiments to the
results folder, as a long-lived project has.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TARGET_S = 3.0
STEP = ("python -c \"import sys; open(sys.argv[1] + '/out.txt', 'w').write(sys.argv[2])\""
        " {out} {params.i}")


def resutil_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("resutil")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "resutil.cli"]


def pipeline_steps(chains: int, length: int) -> dict[str, dict]:
    steps: dict[str, dict] = {}
    for level in range(length):
        for c in range(chains):
            needs = {}
            if level:
                needs["prev"] = f"c{c}s{level - 1}"
            if level and c and level % 3 == 0:
                needs["side"] = f"c{c - 1}s{level - 1}"
            run = STEP + "".join(f" {{needs.{k}}}" for k in needs)
            body = {"run": run, "params": {"i": len(steps)}}
            if needs:
                body["needs"] = needs
            steps[f"c{c}s{level}"] = body
    steps["report"] = {"run": STEP, "params": {"i": len(steps)},
                       "needs": {f"c{c}": f"c{c}s{length - 1}" for c in range(chains)}}
    return steps


def make_git_repo(proj: Path) -> None:
    (proj / "lib.py").write_text("X = 1\n")
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.com"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run([*git, *cmd], cwd=proj, check=True, capture_output=True)
    (proj / "lib.py").write_text("X = 2\n")  # an uncommitted change


def add_history(results: Path, count: int) -> None:
    """Past experiments (decorator-sized metadata, one file each) made with resutil's own code."""
    from datetime import datetime, timedelta

    from resutil.capture import environment
    from resutil.metadata import ExpMeta, compute_manifest, write_meta
    from resutil.workspace import Workspace

    ws, env = Workspace(results), environment()
    start = datetime(2024, 1, 1)
    for i in range(count):
        folder = ws.path(ws.create(f"old-{i}", start + timedelta(minutes=i)).name)
        (folder / "out.txt").write_text(str(i))
        meta = ExpMeta(name=folder.name, comment=f"old-{i}", args="train.py", environment=env)
        meta.manifest = compute_manifest(folder)
        write_meta(folder, meta)


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUTIL_")}
    env["RESUTIL_NO_INTERACTIVE"] = "1"
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return took, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=7)
    ap.add_argument("--length", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=8, help="-j for the first (full) run")
    ap.add_argument("--no-git", action="store_true", help="the project is not a git repository")
    ap.add_argument("--history", type=int, default=0, help="extra past experiments in results/")
    ap.add_argument("--keep", type=Path, help="build the project here and keep it")
    args = ap.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="resutil-bench-pipeline-"))
    try:
        proj = base / "proj"
        proj.mkdir(parents=True, exist_ok=False)
        rs = resutil_cmd()
        run([*rs, "init", "--project", "bench", "--results-dir", "results", "--storage", "local",
             "--path", str(base / "remote"), "--yes"], proj)
        steps = pipeline_steps(args.chains, args.length)
        text = yaml.safe_dump({"steps": steps}, sort_keys=False)
        (proj / "resutil-pipeline.yaml").write_text(text)
        n = len(steps)
        if not args.no_git and shutil.which("git"):
            make_git_repo(proj)
        if args.history:
            add_history(proj / "results", args.history)

        took, out = run([*rs, "pipeline", "run", "-j", str(args.jobs)], proj)
        if f"{n} ran, 0 reused" not in out:
            sys.exit(f"the first run did not run every step:\n{out}")
        print(f"project: {n} steps, git: {not args.no_git}, {args.history} other experiments")
        print(f"first run: {n} steps ran in {took:.2f} s (-j {args.jobs})")

        times = []
        for _ in range(args.repeat):
            took, out = run([*rs, "pipeline", "run"], proj)
            if f"0 ran, {n} reused" not in out:
                sys.exit(f"the rerun was not a no-op:\n{out}")
            times.append(took)
        status_took, _ = run([*rs, "pipeline", "status"], proj)
        median = statistics.median(times)
        print(f"no-op rerun of {n} steps: median {median:.3f} s of {args.repeat} "
              f"({', '.join(f'{t:.3f}' for t in times)})")
        print(f"pipeline status: {status_took:.3f} s")
        print(f"{'PASS' if median < TARGET_S else 'FAIL'}: target < {TARGET_S:.0f} s")
        if median >= TARGET_S:
            sys.exit(1)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
