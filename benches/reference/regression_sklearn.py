"""Reference for benches/regression.sh: scikit-learn Ridge and GaussianProcessRegressor and
LightGBM on the same CSV, folds (row % k) and target (mean of all targets) as the Rust bench.
Prints one JSON object per line, in the Rust bench's format. Times are the best of 3 runs
(1 for the GP, whose fits are slow), as in the Rust bench."""
import json
import sys
import time
import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# ARD length scales of irrelevant columns run to their upper bound; expected, not news.
warnings.filterwarnings("ignore", category=ConvergenceWarning)


def gp(d):
    kernel = ConstantKernel(1.0, (1e-4, 1e4)) * Matern(
        length_scale=np.ones(d), length_scale_bounds=(1e-2, 1e3), nu=2.5
    ) + WhiteKernel(0.1, (1e-8, 10.0))
    reg = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=0)
    return make_pipeline(StandardScaler(), reg)


def gbdt(d):
    # Same settings as the Rust GbdtParams defaults (RegMix-like). min_data_in_bin=3 and no
    # bagging/feature sampling are LightGBM's defaults, spelled out: GbdtParams mirrors them.
    return lgb.LGBMRegressor(
        n_estimators=1000, learning_rate=0.01, num_leaves=31, min_child_samples=5,
        min_child_weight=1e-3, reg_lambda=0.0, max_bin=255, min_data_in_bin=3,
        subsample=1.0, colsample_bytree=1.0, n_jobs=1, verbose=-1, random_state=0,
    )


MODELS = {
    "ridge": lambda d: make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
    "gp": gp,
    "gbdt": gbdt,
}
SETS = {"lambda": ["lambda"], "lambda+mde": ["lambda", "mde"], "lambda+mde+merged": ["lambda", "mde", "merged"]}


def main(path, k, n_cand):
    df = pd.read_csv(path)
    targets = [c for c in df.columns if c.startswith("target:")]
    y = df[targets].mean(axis=1).to_numpy()
    n = len(df)
    fold = np.arange(n) % k
    for name, make in MODELS.items():
        for fs, groups in SETS.items():
            cols = [c for c in df.columns if c.split(":")[0] in groups]
            X = df[cols].to_numpy()
            best, pred = np.inf, None
            for _ in range(1 if name == "gp" else 3):
                pred = np.zeros(n)
                t = time.perf_counter()
                for f in range(k):
                    tr, te = fold != f, fold == f
                    m = make(X.shape[1]).fit(X[tr], y[tr])
                    pred[te] = m.predict(X[te])
                best = min(best, time.perf_counter() - t)
            i = int(np.argmin(pred))
            true_rank = float(pd.Series(y).rank(method="average")[i])
            print(json.dumps({
                "impl": "python", "kind": "cv", "model": name, "features": fs,
                "mse": float(np.mean((pred - y) ** 2)), "spearman": float(spearmanr(pred, y)[0]),
                "pearson": float(pearsonr(pred, y)[0]), "top1_rank": true_rank, "seconds": best,
            }), flush=True)
    cols = [c for c in df.columns if c.split(":")[0] in SETS["lambda+mde"]]
    X = df[cols].to_numpy()
    C = X[np.arange(n_cand) % n]
    for name, make in MODELS.items():
        m = make(X.shape[1]).fit(X, y)
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            if name == "gp":
                m.predict(C, return_std=True)
            else:
                m.predict(C)
            best = min(best, time.perf_counter() - t)
        print(json.dumps({"impl": "python", "kind": "predict", "model": name, "features": "lambda+mde",
                          "candidates": n_cand, "seconds": best}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
