"""Step `train`: L2-regularised logistic regression by full-batch gradient descent."""

import argparse
import json
from pathlib import Path

import numpy as np

import resutil
from svg import Figure


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -30, 30)))


@resutil.main()
def main(params):
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=Path, required=True, help="the `features` step's folder")
    ap.add_argument("--out", help="the experiment folder (the same as params.ex_dir)")
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--l2", type=float, default=1e-4)
    args = ap.parse_args()

    f = np.load(args.features / "features.npz")
    x, y = f["x_train"], f["y_train"]
    w, b = np.zeros(x.shape[1]), 0.0
    losses = []
    for _ in range(args.epochs):
        p = sigmoid(x @ w + b)
        losses.append(float(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
                            + args.l2 / 2 * w @ w))
        w -= args.lr * (x.T @ (p - y) / len(y) + args.l2 * w)
        b -= args.lr * float(np.mean(p - y))
    np.savez(params.ex_dir / "model.npz", w=w, b=b)
    (params.ex_dir / "train.json").write_text(json.dumps(
        {"epochs": args.epochs, "lr": args.lr, "l2": args.l2, "final_loss": losses[-1]}))
    fig = Figure("training loss", (0, args.epochs), (0, max(losses) * 1.05), "epoch", "log loss")
    fig.line(range(len(losses)), losses)
    fig.save(params.ex_dir / "loss.svg")
    print(f"final training loss {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
