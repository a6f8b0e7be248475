"""What storing Snakemake outputs as resutil experiments costs, beside plain files.

Builds a throwaway project (local storage, a git repository) and times `snakemake --cores 1`
(a subprocess, median of --repeat runs, each from a clean state) of two workflows, once with
plain output files and once with the same outputs as `storage.resutil("resutil://new:...")`:

  one-job   one rule writing N small outputs: one job, so one experiment of N files
            (the issue 11 target: within 2x of plain files)
  n-jobs    N jobs of one small output each: N experiments (each recorded and published)

    python benchmarks/bench_snakemake.py [--outputs 200] [--repeat 3] [--keep DIR]

Needs Python >= 3.11 with snakemake and snakemake-storage-plugin-resutil (the project's
.venv has them after scripts/bootstrap.sh).
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

TARGET_RATIO = 2.0

ONE_JOB = """
N = {n}
rule all:
    input: {wrap}("{prefix}out/{{i}}.txt".format(i=N - 1))

rule make:
    output: {wrap}(expand("{prefix}out/{{i}}.txt", i=range(N)))
    shell: "for f in {{output}}; do echo $f > $f; done"
"""

N_JOBS = """
N = {n}
rule all:
    input: {wrap}(expand("{prefix}out/{{i}}.txt", i=range(N)))

rule make:
    output: {wrap}("{prefix}out/{{i}}.txt")
    shell: "echo {{wildcards.i}} > {{output}}"
"""


def snakefile(template: str, n: int, resutil: bool) -> str:
    if resutil:
        return template.format(n=n, wrap="storage.resutil", prefix="resutil://new:bench/")
    return template.format(n=n, wrap="", prefix="")


def run_once(root: Path, text: str, env: dict[str, str]) -> float:
    for junk in ("out", "results", ".snakemake", *(root / "remote").glob("*")):
        shutil.rmtree(root / junk, ignore_errors=True)
    (root / "Snakefile").write_text(text)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--quiet", "all"],
                          cwd=root, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outputs", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-snakemake-"))
    root.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("resutil")
    subprocess.run([str(exe), "init", "--project", "Bench", "--storage", "local", "--path",
                    str(root / "remote"), "--yes"], cwd=root, check=True, capture_output=True)
    (root / ".gitignore").write_text("out/\nresults/\n.snakemake/\nremote/\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", "-c", "user.email=b@example.org", "-c", "user.name=b", *cmd],
                       cwd=root, check=True)
    env = {**os.environ, "SNAKEMAKE_STORAGE_RESUTIL_CONFIG": str(root / "resutil-conf.yaml")}
    env.pop("RESUTIL_NO_REMOTE", None)
    print(f"{args.outputs} small outputs, snakemake --cores 1, median of {args.repeat}")
    for label, template in (("one-job", ONE_JOB), ("n-jobs", N_JOBS)):
        times = {}
        for resutil in (False, True):
            text = snakefile(template, args.outputs, resutil)
            times[resutil] = statistics.median(run_once(root, text, env)
                                               for _ in range(args.repeat))
        ratio = times[True] / times[False]
        target = f"target <= {TARGET_RATIO:.0f}x: {'met' if ratio <= TARGET_RATIO else 'MISSED'}" \
            if label == "one-job" else "(no target)"
        print(f"  {label:8} plain {times[False]:6.2f} s   resutil {times[True]:6.2f} s   "
              f"{ratio:4.2f}x  {target}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
