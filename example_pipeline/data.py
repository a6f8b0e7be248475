"""Step `data`: a seeded two-class data set (two interleaving half moons), no download."""

import argparse
import json

import numpy as np

import resutil


@resutil.main()
def main(params):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="the experiment folder (the same as params.ex_dir)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    y = rng.integers(0, 2, args.n)
    t = rng.uniform(0, np.pi, args.n)
    x = np.where(y[:, None] == 0,
                 np.c_[np.cos(t), np.sin(t)],
                 np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
    x += rng.normal(0, args.noise, x.shape)
    np.savez(params.ex_dir / "data.npz", x=x, y=y)
    summary = {"n": args.n, "noise": args.noise, "seed": args.seed,
               "class_counts": np.bincount(y).tolist()}
    (params.ex_dir / "data.json").write_text(json.dumps(summary))
    print(f"wrote {args.n} samples to {params.ex_dir / 'data.npz'}")


if __name__ == "__main__":
    main()
