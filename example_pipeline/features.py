"""Step `features`: a seeded train/test split, standardised polynomial features."""

import argparse
from itertools import combinations_with_replacement
from pathlib import Path

import numpy as np

import resutil


def polynomial(x: np.ndarray, degree: int) -> np.ndarray:
    """All monomials of the columns of ``x`` up to ``degree`` (without the constant)."""
    cols = [np.prod(x[:, idx], axis=1)
            for d in range(1, degree + 1)
            for idx in combinations_with_replacement(range(x.shape[1]), d)]
    return np.stack(cols, axis=1)


@resutil.main()
def main(params):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="the `data` step's experiment folder")
    ap.add_argument("--out", help="the experiment folder (the same as params.ex_dir)")
    ap.add_argument("--degree", type=int, default=3)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    data = np.load(args.data / "data.npz")
    x, y = data["x"], data["y"]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(y))
    n_test = int(len(y) * args.test_fraction)
    test, train = order[:n_test], order[n_test:]
    phi = polynomial(x, args.degree)
    mean, std = phi[train].mean(axis=0), phi[train].std(axis=0) + 1e-12
    phi = (phi - mean) / std
    np.savez(params.ex_dir / "features.npz", x_train=phi[train], y_train=y[train],
             x_test=phi[test], y_test=y[test], raw_test=x[test], raw_train=x[train],
             mean=mean, std=std, degree=args.degree)
    print(f"{phi.shape[1]} features; {len(train)} train / {len(test)} test samples")


if __name__ == "__main__":
    main()
