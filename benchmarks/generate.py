#!/usr/bin/env python3
"""Deterministic, seeded benchmark data for resutil's core loop (push / pull).

Two experiments are written under ``--out``:

* ``A/``: 20,000 files of 1-8 KB in nested folders (~92 MB). About 60 % are text that looks
  like what experiments write (CSV of floats, JSON records, log lines), so they compress
  like real files; about 40 % are random bytes (incompressible).
* ``B/``: three large files (~2.1 GB): a ~730 MB metrics CSV (numbers of varying width,
  no repeated line), ~680 MB of random bytes and ~680 MB of float32 weights.

Every file's content depends only on the fixed seed and the file's index, so a run with
``--scale`` or ``--only`` writes the same bytes for the files it shares with a full run
(with the same numpy version). ``--scale 0.05`` shrinks the file count of A and the sizes
of B for a quick smoke run.

Usage::

    python benchmarks/generate.py --out benchmarks/data [--only A|B] [--scale F]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.exit("generate.py needs numpy (pip install numpy, or use the project's .venv)")

SEED = 20250101
MB = 1_000_000

# Experiment A
A_FILES = 20_000
A_MIN, A_MAX = 1024, 8192  # bytes, uniform: mean 4.6 KB -> ~92 MB for 20,000 files
A_PER_DIR = 100  # files per leaf folder
A_SUB = 10  # leaf folders per top folder
# kind -> share of files (text 60 %, random 40 %)
A_KINDS = (("csv", 0.25), ("json", 0.20), ("log", 0.15), ("bin", 0.40))

# Experiment B
B_CSV = 730 * MB
B_RANDOM = 680 * MB
B_WEIGHTS = 680 * MB
CHUNK = 64 * MB
CSV_ROWS_PER_CHUNK = 200_000

WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda sigma omega cat dog "
    "bird fish tree car house road river cloud stone light train valid test sample batch"
).split()
LABELS = ("cat", "dog", "bird", "fish", "car", "tree", "person", "boat", "plane", "horse")
LOGGERS = ("trainer", "data.loader", "model", "optim", "eval", "ckpt", "resutil", "main")
LEVELS = ("INFO",) * 12 + ("DEBUG",) * 5 + ("WARNING",) * 2 + ("ERROR",)


# --------------------------------------------------------------------------- text makers
def _csv_text(rnd: random.Random, size: int) -> str:
    ncols = rnd.randint(3, 8)
    cols = ["step"] + [rnd.choice(("loss", "acc", "lr", "x", "y", "z", "score", "err", "val"))
                       + f"_{c}" for c in range(ncols - 1)]
    lines = [",".join(cols)]
    n = 0
    step = rnd.randint(0, 10_000)
    digits = [rnd.randint(2, 9) for _ in range(ncols - 1)]
    scales = [10 ** rnd.uniform(-4, 3) for _ in range(ncols - 1)]
    while n < size:
        row = [str(step)] + [f"{rnd.gauss(0, s):.{d}g}" for s, d in zip(scales, digits)]
        line = ",".join(row)
        lines.append(line)
        n += len(line) + 1
        step += rnd.choice((1, 1, 1, 10, 100))
    return "\n".join(lines)


def _json_text(rnd: random.Random, size: int) -> str:
    recs = []
    n = 2
    i = rnd.randint(0, 100_000)
    while n < size:
        rec = {
            "id": i,
            "name": f"sample_{i:06d}",
            "label": rnd.choice(LABELS),
            "score": round(rnd.random(), rnd.randint(3, 8)),
            "bbox": [rnd.randint(0, 640), rnd.randint(0, 480), rnd.randint(1, 200), rnd.randint(1, 200)],
            "tags": rnd.sample(WORDS, rnd.randint(0, 4)),
            "valid": rnd.random() > 0.1,
        }
        s = json.dumps(rec)
        recs.append(s)
        n += len(s) + 4
        i += 1
    return "[\n  " + ",\n  ".join(recs) + "\n]"


def _log_text(rnd: random.Random, size: int) -> str:
    lines = []
    n = 0
    t = rnd.randint(0, 86_000) * 1000
    step = rnd.randint(0, 50_000)
    while n < size:
        t += rnd.randint(1, 5000)
        s, ms = divmod(t, 1000)
        h, rem = divmod(s % 86_400, 3600)
        m, s = divmod(rem, 60)
        lvl = rnd.choice(LEVELS)
        who = rnd.choice(LOGGERS)
        k = rnd.random()
        if k < 0.5:
            step += rnd.randint(1, 50)
            msg = (f"epoch {step // 1000} step {step} loss={rnd.uniform(0.01, 3):.4f} "
                   f"lr={rnd.uniform(1e-5, 1e-3):.2e} ({rnd.uniform(5, 300):.1f} it/s)")
        elif k < 0.7:
            msg = f"loaded {rnd.randint(1, 10_000)} samples from /data/{rnd.choice(WORDS)}/{rnd.randint(0, 999):03d}.parquet"
        elif k < 0.85:
            msg = f"saved checkpoint to ckpt/step_{step:07d}.pt ({rnd.uniform(1, 900):.1f} MB)"
        else:
            msg = " ".join(rnd.choices(WORDS, k=rnd.randint(3, 12)))
        line = f"2025-01-01 {h:02d}:{m:02d}:{s:02d},{ms:03d} {lvl:<7} {who}: {msg}"
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines)


TEXT = {"csv": _csv_text, "json": _json_text, "log": _log_text}


def a_plan(count: int) -> list[tuple[str, str, int]]:
    """(relative path, kind, size) for each file of A, decided by the seed alone."""
    rnd = random.Random(SEED)
    kinds = [k for k, _ in A_KINDS]
    weights = [w for _, w in A_KINDS]
    plan = []
    for i in range(A_FILES):
        kind = rnd.choices(kinds, weights)[0]
        size = rnd.randint(A_MIN, A_MAX)
        if i >= count:
            continue
        top, sub = divmod(i // A_PER_DIR, A_SUB)
        ext = {"csv": "csv", "json": "json", "log": "log", "bin": "bin"}[kind]
        rel = f"run_{top:03d}/part_{sub:02d}/{kind}_{i:05d}.{ext}"
        plan.append((rel, kind, size))
    return plan


def make_a(out: Path, scale: float) -> tuple[int, int]:
    count = max(1, round(A_FILES * scale))
    plan = a_plan(count)
    made: set[Path] = set()
    total = 0
    for i, (rel, kind, size) in enumerate(plan):
        path = out / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        if kind == "bin":
            data = np.random.default_rng([SEED, 1, i]).bytes(size)
        else:
            rnd = random.Random(SEED * 100_003 + i)
            text = TEXT[kind](rnd, size)
            data = (text[: size - 1] + "\n").encode()
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
    return len(plan), total


# --------------------------------------------------------------------------- B
def _metrics_chunk(k: int, first_step: int, rows: int) -> bytes:
    rng = np.random.default_rng([SEED, 2, k])
    step = np.arange(first_step, first_step + rows, dtype=np.int64)
    frac = step / 10_000_000
    loss = 2.5 * np.exp(-6 * frac) + rng.gamma(2.0, 0.03, rows)
    val = loss * rng.normal(1.08, 0.02, rows)
    acc = np.clip(1 - loss / 3 + rng.normal(0, 0.01, rows), 0, 1)
    lr = 3e-4 * 0.5 * (1 + np.cos(np.pi * frac))
    gnorm = rng.lognormal(0, 0.6, rows)
    thr = rng.normal(1200, 80, rows)
    wall = first_step * 0.1 + np.cumsum(rng.gamma(5.0, 0.02, rows))
    mem = rng.integers(1_000, 80_000, rows)
    fmt = "%d,%d,%.3f,%.6g,%.6g,%.5f,%.4e,%.5g,%.1f,%d"
    cols = (step, step // 50_000, wall, loss, val, acc, lr, gnorm, thr, mem)
    text = "\n".join(map(fmt.__mod__, zip(*(c.tolist() for c in cols)))) + "\n"
    return text.encode()


def _write_metrics(path: Path, size: int) -> None:
    header = b"step,epoch,wall_time,loss,val_loss,acc,lr,grad_norm,throughput,mem_mb\n"
    with open(path, "wb") as f:
        f.write(header)
        n = len(header)
        k = 0
        while n < size:
            chunk = _metrics_chunk(k, k * CSV_ROWS_PER_CHUNK, CSV_ROWS_PER_CHUNK)
            if n + len(chunk) > size:  # cut on a line end, at or just before ``size``
                cut = chunk.rfind(b"\n", 0, size - n) + 1
                chunk = chunk[:cut] if cut > 0 else chunk[: chunk.find(b"\n") + 1]
                f.write(chunk)
                break
            f.write(chunk)
            n += len(chunk)
            k += 1


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        k = 0
        left = size
        while left > 0:
            n = min(CHUNK, left)
            f.write(np.random.default_rng([SEED, 3, k]).bytes(n))
            left -= n
            k += 1


def _write_weights(path: Path, size: int) -> None:
    count = size // 4
    with open(path, "wb") as f:
        k = 0
        left = count
        while left > 0:
            n = min(CHUNK // 4, left)
            rng = np.random.default_rng([SEED, 4, k])
            w = rng.standard_normal(n, dtype=np.float32)
            w *= np.float32(0.02)
            w.tofile(f)
            left -= n
            k += 1


def make_b(out: Path, scale: float) -> tuple[int, int]:
    out.mkdir(parents=True, exist_ok=True)
    files = (
        ("metrics.csv", _write_metrics, B_CSV),
        ("random.bin", _write_random, B_RANDOM),
        ("model_weights.f32", _write_weights, B_WEIGHTS),
    )
    total = 0
    for name, writer, size in files:
        writer(out / name, max(4096, int(size * scale)))
        total += (out / name).stat().st_size
    return len(files), total


def generate(out: Path, only: str | None = None, scale: float = 1.0, quiet: bool = False) -> dict:
    """Write A and/or B under ``out`` (each into a folder that must not exist yet)."""
    out.mkdir(parents=True, exist_ok=True)
    info = {}
    for which, maker in (("A", make_a), ("B", make_b)):
        if only and only != which:
            continue
        dest = out / which
        if dest.exists():
            raise SystemExit(f"{dest} exists already; remove it or choose another --out")
        t = time.perf_counter()
        tmp = out / f".{which}.partial"
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        tmp.mkdir()
        count, total = maker(tmp, scale)
        os.rename(tmp, dest)
        dt = time.perf_counter() - t
        info[which] = {"files": count, "bytes": total, "seconds": round(dt, 2)}
        if not quiet:
            print(f"generated {which}: {count} files, {total / MB:.1f} MB in {dt:.1f} s -> {dest}")
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to write A/ and B/ into")
    ap.add_argument("--only", choices=("A", "B"), help="write only this experiment")
    ap.add_argument("--scale", type=float, default=1.0, help="shrink sizes, e.g. 0.05")
    args = ap.parse_args(argv)
    if not 0 < args.scale <= 1:
        ap.error("--scale must be in (0, 1]")
    generate(args.out, args.only, args.scale)


if __name__ == "__main__":
    main()
