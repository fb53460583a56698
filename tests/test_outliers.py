import os

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


# --------------------------------------------------------------------------
# the outliers stage
def test_stage_rejects_non_finite_rows_alone(tmp_path):
    """A row with a NaN amplitude is listed in OUT.rejected.xmd with the reason;
    the other rows' distances are exactly those of a run without it."""
    from deephemnma.stages import outliers
    rng = np.random.default_rng(2)
    q = rng.normal(size=(200, 3)) * 10
    q[0] = [200, -200, 0]
    t = Table({"itemId": np.arange(1, 201), "nmaDisplacements": q})
    write_xmd(tmp_path / "clean.xmd", t)
    bad = t.copy()
    bad["nmaDisplacements"] = q.copy()
    bad["nmaDisplacements"][[5, 9]] = [[np.nan, 1, 2], [np.inf, 0, 0]]
    write_xmd(tmp_path / "bad.xmd", bad)
    ref = outliers.run(outliers.Config(input=str(tmp_path / "clean.xmd"),
                                       out=str(tmp_path / "ref.xmd")))
    ids = np.setdiff1d(np.arange(1, 201), [6, 10])
    write_xmd(tmp_path / "without.xmd", t.subset(ids - 1))
    without = outliers.run(outliers.Config(input=str(tmp_path / "without.xmd"),
                                           out=str(tmp_path / "w.xmd")))
    got = outliers.run(outliers.Config(input=str(tmp_path / "bad.xmd"),
                                       out=str(tmp_path / "sub" / "kept.xmd")))
    assert (got.n_input, got.n_rejected, got.n_kept) == (200, 2, without.n_kept)
    assert ref.n_kept < 200 and 1 not in read_metadata(ref.particles)["itemId"]
    a, b = read_metadata(got.particles), read_metadata(without.particles)
    assert np.array_equal(a["itemId"], b["itemId"])
    assert np.array_equal(a["mahalanobis"], b["mahalanobis"])
    rej = read_metadata(got.rejected)
    assert list(rej["itemId"]) == [6, 10]
    assert set(rej["rejectReason"]) == {"non-finite amplitude"}
    assert any("2 row(s) with non-finite" in x for x in outliers.summary(got, outliers.Config()))
    assert not os.path.exists(ref.rejected)


def test_stage_bad_input_leaves_nothing(tmp_path):
    from deephemnma.stages import outliers
    write_xmd(tmp_path / "zero.xmd", Table({"itemId": np.zeros(0, np.int64)}))
    write_xmd(tmp_path / "one.xmd", Table({"itemId": np.array([1, 2]),
                                           "nmaDisplacements": np.array([[1.0], [np.nan]])}))
    write_xmd(tmp_path / "ok.xmd", Table({"itemId": np.arange(1, 5),
                                          "nmaDisplacements": np.arange(4.0)[:, None]}))
    out = str(tmp_path / "o" / "k.xmd")
    for cfg, match in [
            (dict(input=str(tmp_path / "zero.xmd")), "no particles"),
            (dict(input=str(tmp_path / "one.xmd")), "at least 2"),
            (dict(input=str(tmp_path / "ok.xmd"), threshold=0.0), "--threshold"),
            (dict(input=str(tmp_path / "ok.xmd"), threshold=float("nan")), "--threshold"),
            (dict(input=str(tmp_path / "ok.xmd"), out=str(tmp_path / "ok.xmd")),
             "also an input"),
            (dict(input=str(tmp_path / "nope.xmd")), "not found")]:
        with pytest.raises(InputError, match=match):
            outliers.run(outliers.Config(**dict(dict(out=out), **cfg)))
        assert not (tmp_path / "o").exists()
    assert read_metadata(tmp_path / "ok.xmd")["nmaDisplacements"].shape == (4, 1)
