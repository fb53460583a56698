import numpy as np
import pytest

from deephemnma.core.outliers import mahalanobis_distances, mahalanobis_filter
from deephemnma.errors import InputError
from deephemnma.io.metadata import Table, read_metadata, write_xmd


def test_planted_outliers_removed():
    rng = np.random.default_rng(0)
    cov = np.array([[400.0, 300, 0], [300, 400, 0], [0, 0, 25]])
    x = rng.multivariate_normal([0, 50, -20], cov, 2000)
    out = np.array([[0, 50, 30], [60, -10, -20], [-80, 120, -20]])   # off the correlation
    keep, d = mahalanobis_filter(np.vstack([x, out]), 3.2)
    assert not keep[-3:].any()
    assert 0.95 < keep[:-3].mean() < 0.999      # chi(3) tail above 3.2 is ~1.7 %
    # matches the closed form for a known covariance
    dd = mahalanobis_distances(x)
    assert np.median(dd) == pytest.approx(np.sqrt(2.366), rel=0.05)   # median of chi(3)


def test_singular_and_bad():
    x = np.column_stack([np.arange(10.0), np.zeros(10)])
    assert np.isfinite(mahalanobis_distances(x)).all()
    with pytest.raises(InputError):
        mahalanobis_distances(np.array([[1.0, np.nan], [2, 3]]))
    with pytest.raises(InputError):
        mahalanobis_filter(x, threshold=0)


def test_cli(tmp_path):
    from deephemnma.cli import main
    rng = np.random.default_rng(1)
    q = rng.normal(size=(300, 2)) * 10
    q[0] = [200, -200]
    write_xmd(tmp_path / "a.xmd", Table({"itemId": np.arange(1, 301), "nmaDisplacements": q}))
    assert main(["outliers", "--input", str(tmp_path / "a.xmd"), "--out",
                 str(tmp_path / "b.xmd")]) == 0
    b = read_metadata(tmp_path / "b.xmd")
    assert 1 not in b["itemId"] and len(b) > 280 and b["mahalanobis"].max() <= 3.2
