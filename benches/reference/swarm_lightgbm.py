"""Reference for benches/swarm.sh: LightGBM with RegMix's settings (Liu et al. 2024,
regression_fitting/regression.ipynb: gbdt, objective regression, 1000 iterations, learning
rate 0.01, seed 42, early stopping after 3 rounds without improvement of the l2 on a
validation set) on the same swarm CSV, rows and target (the study's objective) as the Rust
`holdout` mode: fit on all but one block of n_test rows, score on those (block b: rows
n - (b+1)·n_test .. n - b·n_test; block 0, the default, is the last n_test rows). RegMix
early-stops on the rows it then reports; here the validation set is the last 20% of the training rows, so the test rows
stay unseen. Features: λ alone (RegMix's setting), and λ+MDE when the table has them.
Prints one JSON object per line, in the Rust bench's format; the time is fit + predict,
best of 3, one thread."""
import json
import sys
import time
import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

# LightGBM 4.7 deprecates `eval_set` for `eval_X`/`eval_y`; the older name works in every 4.x.
warnings.filterwarnings("ignore", message=".*eval_set.*deprecated")

PARAMS = dict(boosting_type="gbdt", objective="regression", n_estimators=1000,
              learning_rate=1e-2, random_state=42, n_jobs=1, verbose=-1)


def main(path, n_test, block=0):
    df = pd.read_csv(path)
    targets = [c for c in df.columns if c.startswith("target:")]
    # A study's table has its objective; otherwise the mean of all targets (as the Rust side).
    y = (df["target:objective"] if "target:objective" in df.columns else df[targets].mean(axis=1)).to_numpy()
    n = len(df)
    if not 0 < n_test < n or (block + 1) * n_test > n:
        sys.exit(f"n_test = {n_test}, block = {block}: expected 0 < n_test < {n} and (block + 1) * n_test <= {n}")
    te = np.arange(n - (block + 1) * n_test, n - block * n_test)
    tr = np.setdiff1d(np.arange(n), te)
    n_val = max(1, len(tr) // 5)
    fit, val = tr[:-n_val], tr[-n_val:]
    sets = {"lambda": ["lambda"]}
    if any(c.startswith("mde:") for c in df.columns):
        sets["lambda+mde"] = ["lambda", "mde"]
    for fs, groups in sets.items():
        X = df[[c for c in df.columns if c.split(":")[0] in groups]].to_numpy()
        best, pred, iters = np.inf, None, None
        for _ in range(3):
            t = time.perf_counter()
            m = lgb.LGBMRegressor(**PARAMS).fit(
                X[fit], y[fit], eval_set=[(X[val], y[val])], eval_metric="l2",
                callbacks=[lgb.early_stopping(stopping_rounds=3, verbose=False)])
            pred = m.predict(X[te])
            best = min(best, time.perf_counter() - t)
            iters = m.best_iteration_
        print(json.dumps({
            "impl": "python", "kind": "holdout", "block": block, "model": "gbdt", "features": fs,
            "train": int(len(tr)), "test": int(n_test), "iterations": int(iters or 0),
            "mse": float(np.mean((pred - y[te]) ** 2)), "spearman": float(spearmanr(pred, y[te])[0]),
            "pearson": float(pearsonr(pred, y[te])[0]), "seconds": best,
        }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
