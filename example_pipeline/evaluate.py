"""Step `evaluate`: test-set metrics (metrics.json) and a decision-map plot (decision.svg)."""

import argparse
import json
from pathlib import Path

import numpy as np

import resutil
from features import polynomial
from svg import Figure
from train import sigmoid


@resutil.main()
def main(params):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True, help="the `train` step's folder")
    ap.add_argument("--features", type=Path, required=True, help="the `features` step's folder")
    ap.add_argument("--out", help="the experiment folder (the same as params.ex_dir)")
    args = ap.parse_args()

    m = np.load(args.model / "model.npz")
    f = np.load(args.features / "features.npz")
    w, b = m["w"], float(m["b"])
    p = sigmoid(f["x_test"] @ w + b)
    y = f["y_test"]
    pred = (p >= 0.5).astype(int)
    tp, fp = int(np.sum((pred == 1) & (y == 1))), int(np.sum((pred == 1) & (y == 0)))
    fn, tn = int(np.sum((pred == 0) & (y == 1))), int(np.sum((pred == 0) & (y == 0)))
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    metrics = {
        "accuracy": float(np.mean(pred == y)),
        "log_loss": float(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "n_test": int(len(y)),
    }
    (params.ex_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")

    # The model's probability on a grid (background) and the test points (dots).
    raw = f["raw_test"]
    lo, hi = raw.min(axis=0) - 0.3, raw.max(axis=0) + 0.3
    title = f"test set, accuracy {metrics['accuracy']:.3f}"
    fig = Figure(title, (lo[0], hi[0]), (lo[1], hi[1]), "x1", "x2")
    n = 48  # cells per side, each coloured by the probability at its centre
    cw, ch = (hi[0] - lo[0]) / n, (hi[1] - lo[1]) / n
    gx, gy = np.meshgrid(lo[0] + cw * (np.arange(n) + 0.5), lo[1] + ch * (np.arange(n) + 0.5))
    grid = np.c_[gx.ravel(), gy.ravel()]
    phi = (polynomial(grid, int(f["degree"])) - f["mean"]) / f["std"]
    for (x0, y0), q in zip(grid, sigmoid(phi @ w + b)):
        r, g, bl = int(255 - 60 * q), int(235 - 40 * abs(q - 0.5)), int(195 + 60 * q)
        fig.cell(x0 - cw / 2, y0 - ch / 2, cw, ch, f"rgb({r},{g},{bl})")
    for (x0, y0), label in zip(raw, y):
        fig.dot(x0, y0, "#1f5fbf" if label else "#d9481f")
    fig.save(params.ex_dir / "decision.svg")
    print(json.dumps({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}))


if __name__ == "__main__":
    main()
