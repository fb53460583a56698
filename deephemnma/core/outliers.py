"""Outlier rejection on normal-mode amplitudes (the paper keeps images whose
Mahalanobis distance to the amplitude distribution is <= 3.2)."""
from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["mahalanobis_distances", "mahalanobis_filter"]


def mahalanobis_distances(x: np.ndarray, robust: bool = False) -> np.ndarray:
    """Distances (n,) of rows of x (n, m) to their mean under their covariance.
    A singular covariance (e.g. a mode that never moves) uses the pseudo-inverse.
    ``robust=True`` estimates mean/covariance with the minimum covariance
    determinant (scikit-learn), less pulled by the outliers themselves."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"need at least 2 amplitude vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("amplitudes contain NaN or infinite values")
    if robust and len(x) > 2 * x.shape[1] + 1:
        from sklearn.covariance import MinCovDet
        mcd = MinCovDet(random_state=0).fit(x)
        return np.sqrt(mcd.mahalanobis(x))
    mu = x.mean(0)
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    icov = np.linalg.pinv(cov)
    d = x - mu
    return np.sqrt(np.einsum("ni,ij,nj->n", d, icov, d).clip(min=0))


def mahalanobis_filter(x: np.ndarray, threshold: float = 3.2,
                       robust: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, distances): keep rows with distance <= threshold."""
    if threshold <= 0:
        raise InputError(f"Mahalanobis threshold must be positive, got {threshold}")
    d = mahalanobis_distances(x, robust)
    return d <= threshold, d
