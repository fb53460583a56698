"""Accuracy metrics of the paper (Tables 1-4).

* amplitudes: per-mode mean absolute error (and std);
* angles: the angular distance between orientations (mean angle between the
  rotated coordinate axes, :func:`rotations.angular_distance`), degrees;
* shifts: |dx| and |dy| in Å;
* RMSD terms: for each image, the RMSD between the reference atoms displaced
  with the estimated and with the true parameters, one parameter type at a
  time: amplitudes (RMSD of sum_k dq_k V_k), angles (RMSD between X0 A_est^T and
  X0 A_true^T), shifts (|d shift| in Å, a rigid translation).

Rows of two tables are matched by ``itemId`` (else by ``image``, else by
position when both have the same length).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import InputError
from . import rotations

if TYPE_CHECKING:
    from ..io.metadata import Table

PathLike = Union[str, os.PathLike]     # a path as str or pathlib.Path

__all__ = ["predict_the_mean", "match_rows", "amplitude_errors", "angular_errors", "shift_errors",
           "rmsd_terms", "evaluate", "format_table", "pc1", "pc1_correlation", "cv_r2"]


def match_rows(est: Table, truth: Table) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i_est, i_truth) of the rows present in both tables."""
    for key in ("itemId", "image"):
        if key in est and key in truth:
            pos = {v: i for i, v in enumerate(truth[key].tolist())}
            ie = [i for i, v in enumerate(est[key].tolist()) if v in pos]
            if ie:
                return np.array(ie), np.array([pos[est[key][i]] for i in ie])
    if len(est) == len(truth):
        return np.arange(len(est)), np.arange(len(truth))
    raise InputError("cannot match estimated and true rows (no common itemId/image and "
                     "different lengths)")


def amplitude_errors(est: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(est, float) - np.asarray(true, float))


def angular_errors(est_angles: np.ndarray, true_angles: np.ndarray) -> np.ndarray:
    return rotations.angular_distance(rotations.euler_to_matrix(np.asarray(est_angles, float)),
                                      rotations.euler_to_matrix(np.asarray(true_angles, float)))


def shift_errors(est: np.ndarray, true: np.ndarray, pixel_size: float) -> np.ndarray:
    return np.abs(np.asarray(est, float) - np.asarray(true, float)) * pixel_size


def rmsd_terms(ref_coords: np.ndarray | None, vectors: np.ndarray | None, est: Table,
               truth: Table, pixel_size: float) -> dict[str, np.ndarray]:
    """Per-image RMSD (Å) for amplitudes, angles, shifts (dict of arrays)."""
    out = {}
    if vectors is not None and "nmaDisplacements" in est and "nmaDisplacements" in truth:
        dq = est["nmaDisplacements"] - truth["nmaDisplacements"]
        disp = np.tensordot(dq, vectors, axes=([1], [0]))            # (n, N, 3)
        out["amplitudes"] = np.sqrt((disp ** 2).sum(-1).mean(-1))
    if "angleRot" in est and "angleRot" in truth and ref_coords is not None:
        Ae = rotations.euler_to_matrix(est.angles())
        At = rotations.euler_to_matrix(truth.angles())
        x0 = ref_coords - ref_coords.mean(0)
        # RMSD(X0 Ae^T, X0 At^T)^2 = mean |(Ae - At) x|^2 = tr(D C D^T) with C = mean x x^T
        C = x0.T @ x0 / len(x0)
        D = Ae - At
        out["angles"] = np.sqrt(np.einsum("nij,jk,nik->n", D, C, D).clip(min=0))
    if "shiftX" in est and "shiftX" in truth:
        out["shifts"] = np.linalg.norm(est.shifts() - truth.shifts(), axis=1) * pixel_size
    return out


def evaluate(est: Table, truth: Table, pixel_size: float, ref_coords: np.ndarray | None = None,
             vectors: np.ndarray | None = None,
             mode_numbers: Iterable[int] | None = None) -> dict[str, Any]:
    """All metrics as a JSON-friendly dict {quantity: {mean, std}}."""
    ie, it = match_rows(est, truth)
    e, t = est.subset(ie), truth.subset(it)
    res = {"n": int(len(ie))}
    if "nmaDisplacements" in e and "nmaDisplacements" in t:
        if e["nmaDisplacements"].shape[1] != t["nmaDisplacements"].shape[1]:
            raise InputError("estimated and true tables have different numbers of modes")
        err = amplitude_errors(e["nmaDisplacements"], t["nmaDisplacements"])
        nums = mode_numbers if mode_numbers is not None else range(1, err.shape[1] + 1)
        res["amplitude_mae_mean"] = {"mean": float(err.mean()), "std": float(err.mean(1).std())}
        for k, num in enumerate(nums):
            res[f"mode_{num}"] = {"mean": float(err[:, k].mean()), "std": float(err[:, k].std())}
    if "angleRot" in e and "angleRot" in t:
        a = angular_errors(e.angles(), t.angles())
        res["angles_deg"] = {"mean": float(a.mean()), "std": float(a.std())}
    if "shiftX" in e and "shiftX" in t:
        s = shift_errors(e.shifts(), t.shifts(), pixel_size)
        res["shift_x_A"] = {"mean": float(s[:, 0].mean()), "std": float(s[:, 0].std())}
        res["shift_y_A"] = {"mean": float(s[:, 1].mean()), "std": float(s[:, 1].std())}
    for k, v in rmsd_terms(ref_coords, vectors, e, t, pixel_size).items():
        res[f"rmsd_{k}_A"] = {"mean": float(v.mean()), "std": float(v.std())}
    return res


def predict_the_mean(train: Table, test: Table) -> Table:
    """The predict-the-mean baseline: a table with ``test``'s itemIds whose
    every row carries the mean amplitudes and shifts of the ``train`` rows and
    their chordal-mean orientation (the rotation nearest the mean rotation
    matrix). A network that does not beat it has learnt nothing."""
    from ..io.metadata import Table
    u, _, vt = np.linalg.svd(rotations.euler_to_matrix(train.angles()).mean(0))
    ang = rotations.matrix_to_euler(u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt)
    n = len(test)
    return Table({"itemId": test["itemId"], "angleRot": np.full(n, ang[0]),
                  "angleTilt": np.full(n, ang[1]), "anglePsi": np.full(n, ang[2]),
                  "shiftX": np.full(n, train["shiftX"].mean()),
                  "shiftY": np.full(n, train["shiftY"].mean()),
                  "nmaDisplacements": np.tile(train["nmaDisplacements"].mean(0), (n, 1))})


def pc1(values: np.ndarray) -> np.ndarray:
    """The first principal component's coordinate of each row of ``values``
    (n, d): the centred rows projected on the direction of largest variance
    (its sign is arbitrary)."""
    x = np.asarray(values, float)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[0]


def pc1_correlation(est: np.ndarray, truth: np.ndarray) -> float:
    """|r| between the PC1 of the estimated amplitudes ``est`` (n, d; a
    landscape's first axis) and the PC1 of the true ones ``truth`` (n, d'),
    row for row: 1 when the landscape's main axis orders the particles as the
    true main motion does, whatever its sign."""
    est, truth = np.asarray(est, float), np.asarray(truth, float)
    if len(est) != len(truth) or len(est) < 3:
        raise InputError(f"PC1 correlation needs the same particles, at least 3 "
                         f"(got {len(est)} and {len(truth)})")
    return float(abs(np.corrcoef(pc1(est), pc1(truth))[0, 1]))


def cv_r2(features: np.ndarray, truth: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated R² of a linear regression of ``truth`` (n, d: e.g. the
    true amplitudes) on ``features`` (n, k: e.g. estimated amplitudes): the
    rows are split in ``folds`` shuffled parts (``seed``), each part is
    predicted by the regression fitted on the others, and R² is computed on
    these held-out predictions (1 - residual / total sum of squares, summed
    over the truth's columns). 1: the truth is a linear function of the
    features; 0: no better than its mean."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold
    x, y = np.asarray(features, float), np.asarray(truth, float)
    x = x.reshape(len(x), -1)
    y = y.reshape(len(y), -1)
    if len(x) != len(y) or len(x) < 2 * folds or folds < 2:
        raise InputError(f"cross-validated R² needs as many feature rows as true rows, at "
                         f"least 2 per fold, and 2 folds or more (got {len(x)} and {len(y)} "
                         f"rows, {folds} folds)")
    pred = np.empty_like(y)
    for fit, held in KFold(folds, shuffle=True, random_state=seed).split(x):
        pred[held] = LinearRegression().fit(x[fit], y[fit]).predict(x[held])
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def format_table(results: dict[str, Any], title: str = "") -> str:
    """Markdown table of :func:`evaluate` results (one or several columns)."""
    if isinstance(results, dict) and "n" in results:
        results = {title or "value": results}
    names = list(results)
    keys = [k for k in next(iter(results.values())) if k != "n"]
    lines = ["| metric | " + " | ".join(f"{n} (n={results[n]['n']})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for k in keys:
        cells = []
        for n in names:
            v = results[n].get(k)
            cells.append("" if v is None else f"{v['mean']:.2f} ± {v['std']:.2f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_json(results: dict[str, Any], path: PathLike) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
