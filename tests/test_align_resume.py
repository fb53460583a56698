"""`deephemnma align` interrupted and resumed.

* kill -9 once k chunk files exist in OUT.parts (k = 1, 4 of 6; k = 2 in the
  two tests after), rerun the same command: the output equals an
  uninterrupted run exactly (same rows in input order, same values, no
  duplicates), and the rerun continues (it does not announce a fresh start);
* parts left by a run on another input are not reused: the rerun on set B says
  in one line that it starts afresh and gives set B's own results;
* changing --chunk on resume works without deleting OUT.parts by hand and gives
  the results of an uninterrupted run with that chunk size;
* a row with a NaN defocus, or a NaN image, is rejected alone (listed in
  OUT.rejected.xmd) and every other row's result is bit-identical to a run on
  the input without that row.

Tiny settings: 12 particles of 32 px, --angular-step 30, 3+2 iterations,
--chunk 2 (6 chunks): a run takes a few seconds.
"""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, shared_file

PS = "2.6"
N = 12
RESULT_COLUMNS = ("angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY",
                  "nmaDisplacements", "cost")


def _env():
    return dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1",
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


class Data:
    def __init__(self, root):
        self.root = str(root)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def argv(self, particles, out, chunk=2):
        """The align command line for ``particles`` -> ``out``."""
        return ["align", "--particles", particles, "--modes", self.path("ref"),
                "--structure", self.path("ref", "reference.pdb"), "--pixel-size", PS,
                "--out", out, "--angular-step", "30", "--coarse-iters", "3",
                "--fine-iters", "2", "--chunk", str(chunk)]


def _cli(argv):
    """``deephemnma <argv>`` in this process (quiet); its exit code."""
    from deephemnma.cli import main
    old = os.environ.get("DEEPHEMNMA_QUIET")
    os.environ["DEEPHEMNMA_QUIET"] = "1"
    try:
        return main([str(a) for a in argv])
    finally:
        if old is None:
            os.environ.pop("DEEPHEMNMA_QUIET", None)
        else:
            os.environ["DEEPHEMNMA_QUIET"] = old


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Modes of AK, set A and set B (12 particles each, 32 px), and variants of
    A with one bad row (and the same without that row)."""
    from deephemnma.io.metadata import read_metadata, write_xmd
    from deephemnma.io.stacks import open_stack, write_stack
    d = Data(tmp_path_factory.mktemp("align_resume"))
    ak = shared_file("continuousflex", "AK.pdb")
    assert _cli(["nma", "--structure", ak, "--out", d.path("ref"), "--modes", 10]) == 0
    for name, seed in (("A", 1), ("B", 2)):
        assert _cli(["simulate", "--structure", ak, "--modes", d.path("ref"), "--out",
                     d.path(name), "-n", N, "--box", 32, "--pixel-size", PS, "--snr", 1.0,
                     "--seed", seed]) == 0
    t = read_metadata(d.path("A", "particles.xmd"))
    # itemId 4: NaN defocus
    u = t.copy()
    dfu = u["ctfDefocusU"].astype(np.float64)
    dfu[3] = np.nan
    u["ctfDefocusU"] = dfu
    write_xmd(d.path("A", "nan_defocus.xmd"), u)
    write_xmd(d.path("A", "without4.xmd"), t.subset(np.arange(N) != 3))
    # itemId 6: NaN image (all rows read the stack bad.mrcs)
    imgs = np.array(open_stack(d.path("A", "particles.mrcs"))[:])
    imgs[5] = np.nan
    write_stack(d.path("A", "bad.mrcs"), imgs, float(PS))
    u = t.copy()
    u["image"] = np.array([str(r).replace("particles.mrcs", "bad.mrcs") for r in u["image"]],
                          dtype=object)
    write_xmd(d.path("A", "nan_image.xmd"), u)
    write_xmd(d.path("A", "without6.xmd"), u.subset(np.arange(N) != 5))
    # uninterrupted runs, as real processes (the resumed ones are processes too);
    # every output lies two levels below the data root, so image references match
    for name, particles, chunk in (("baseA", "A", 2), ("baseB", "B", 2), ("baseA4", "A", 4)):
        rc, _, err = run(d.argv(d.path(particles, "particles.xmd"),
                                d.path("runs", name, "a.xmd"), chunk))
        assert rc == 0, err[-2000:]
    return d


def run(argv, timeout=300):
    r = subprocess.run([sys.executable, "-m", "deephemnma"] + [str(a) for a in argv],
                       env=_env(), capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def run_and_kill(argv, parts, k, timeout=120):
    """Start ``deephemnma <argv>``; kill -9 it once ``parts`` holds >= k chunk
    files. Returns the number of chunk files at the kill."""
    p = subprocess.Popen([sys.executable, "-m", "deephemnma"] + [str(a) for a in argv],
                         env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while True:
            n = len(glob.glob(os.path.join(parts, "*.npz")))
            if n >= k:
                p.send_signal(signal.SIGKILL)
                break
            if p.poll() is not None:
                pytest.fail(f"align ended (exit {p.returncode}) before {k} chunks: "
                            f"{p.stderr.read().decode()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"no {k} chunks after {timeout} s")
            time.sleep(0.005)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL, f"not killed: exit {p.returncode}"
    return n


def assert_same_result(path, reference):
    """``path`` equals ``reference``: same columns, rows (itemIds unique, same
    order) and values, bit for bit (and the same bytes)."""
    from deephemnma.io.metadata import read_metadata
    a, b = read_metadata(path), read_metadata(reference)
    assert a.columns == b.columns
    ids = a["itemId"].tolist()
    assert len(set(ids)) == len(ids), f"duplicate rows: {ids}"
    assert ids == b["itemId"].tolist(), f"rows {ids} != {b['itemId'].tolist()}"
    for c in a.columns:
        x, y = np.asarray(a[c]), np.asarray(b[c])
        if x.dtype.kind in "fi":
            assert np.array_equal(x, y, equal_nan=True), f"column {c} differs"
        else:
            assert x.tolist() == y.tolist(), f"column {c} differs"
    with open(path, "rb") as f, open(reference, "rb") as g:
        assert f.read() == g.read(), "same values, different file content"


def assert_clean(out):
    """No OUT.parts, no temporary file beside OUT."""
    assert not os.path.exists(out + ".parts"), f"{out}.parts left behind"
    folder = os.path.dirname(out)
    stray = [n for n in os.listdir(folder) if n.startswith(".") or n.endswith((".tmp", ".part"))]
    assert not stray, f"temporary files left: {stray}"


@pytest.mark.parametrize("k", [1, 4])
def test_kill_and_resume_equals_uninterrupted(data, k):
    out = data.path("runs", f"kill{k}", "a.xmd")
    argv = data.argv(data.path("A", "particles.xmd"), out)
    n = run_and_kill(argv, out + ".parts", k)
    assert n >= k
    assert not os.path.exists(out), "a killed run wrote its output"
    rc, _, err = run(argv)
    assert rc == 0, err[-2000:]
    assert "afresh" not in err.lower(), f"the rerun did not resume: {err}"
    assert_same_result(out, data.path("runs", "baseA", "a.xmd"))
    assert_clean(out)


def test_resume_with_other_input_starts_afresh(data):
    """Parts of set A under OUT.parts; the same OUT for set B: one line says
    the run starts afresh, and the result is set B's own."""
    out = data.path("runs", "other", "a.xmd")
    run_and_kill(data.argv(data.path("A", "particles.xmd"), out), out + ".parts", 2)
    rc, _, err = run(data.argv(data.path("B", "particles.xmd"), out))
    assert rc == 0, err[-2000:]
    lines = [x for x in err.splitlines() if "afresh" in x.lower()]
    assert len(lines) == 1, f"expected one line saying the run starts afresh:\n{err}"
    assert_same_result(out, data.path("runs", "baseB", "a.xmd"))
    assert_clean(out)


def test_resume_with_other_chunk_size(data):
    """Killed with --chunk 2, rerun with --chunk 4: completes without deleting
    OUT.parts by hand, equal to an uninterrupted --chunk 4 run."""
    out = data.path("runs", "chunk", "a.xmd")
    run_and_kill(data.argv(data.path("A", "particles.xmd"), out, chunk=2), out + ".parts", 2)
    rc, _, err = run(data.argv(data.path("A", "particles.xmd"), out, chunk=4))
    assert rc == 0, err[-2000:]
    assert_same_result(out, data.path("runs", "baseA4", "a.xmd"))
    assert_clean(out)


@pytest.mark.parametrize("bad,clean,item", [("nan_defocus.xmd", "without4.xmd", 4),
                                            ("nan_image.xmd", "without6.xmd", 6)],
                         ids=["nan-defocus", "nan-image"])
def test_bad_row_rejected_alone(data, bad, clean, item):
    """The bad row is left out and listed in OUT.rejected.xmd; the other rows'
    results are bit-identical to a run on the input without that row (the row
    sits inside a chunk of 2, so the chunks must be formed from usable rows)."""
    from deephemnma.io.metadata import read_metadata
    out = data.path("runs", f"row{item}", "a.xmd")
    ref = data.path("runs", f"row{item}_clean", "a.xmd")
    assert _cli(data.argv(data.path("A", bad), out)) == 0
    assert _cli(data.argv(data.path("A", clean), ref)) == 0
    rejected = read_metadata(data.path("runs", f"row{item}", "a.rejected.xmd"))
    assert rejected["itemId"].tolist() == [item]
    a, b = read_metadata(out), read_metadata(ref)
    assert a["itemId"].tolist() == b["itemId"].tolist() == \
        [i for i in range(1, N + 1) if i != item]
    for c in RESULT_COLUMNS:
        assert np.array_equal(np.asarray(a[c]), np.asarray(b[c])), f"{c} differs"
        assert np.isfinite(np.asarray(a[c], np.float64)).all()
    assert_clean(out)


def test_every_align_option_says_which_stamps_hold_it(monkeypatch):
    """Every AlignOptions field declares the stages whose results it changes
    (a new field without it fails here and in result_options): align's stamp
    holds the global search's options, refine's its own steps, both the
    shared ones; neither holds the device or the threads; the options of
    align --from-poses alone count in align's stamp only with it (a changed
    cone does not restart a global run)."""
    import dataclasses
    from deephemnma.core.config import ALIGN_STAGES, AlignOptions, result_options
    fields = dataclasses.fields(AlignOptions)
    unclassified = [f.name for f in fields if "affects" not in f.metadata]
    assert not unclassified, f"AlignOptions fields not classified: {unclassified}"
    for f in fields:
        assert set(f.metadata["affects"]) <= set(ALIGN_STAGES), f.name
    opt = AlignOptions()
    align, refine = result_options(opt, "align"), result_options(opt, "refine")
    for speed in ("device", "threads"):
        assert speed not in align and speed not in refine
    assert {"angular_step", "coarse_iters", "fine_iters"} <= set(align) - set(refine)
    assert {"refine_coarse_iters", "refine_fine_iters"} <= set(refine) - set(align)
    assert {"pyramid", "batch_size", "sigma", "mask_radius"} <= set(align) & set(refine)
    changed = dataclasses.replace(opt, angular_step=20.0, threads=2)
    assert result_options(changed, "align") != align
    assert result_options(changed, "refine") == refine

    # the options of --from-poses alone count only with it
    local = {"cone", "shift_window", "local_candidates", "local_coarse_iters",
             "local_fine_iters", "pose_sigma"}
    assert not local & set(align)
    other = dataclasses.replace(opt, cone=5.0, shift_window=1.0, local_candidates=3,
                                local_coarse_iters=2, local_fine_iters=4, pose_sigma=1.0)
    assert result_options(other, "align") == align
    poses = dataclasses.replace(opt, from_poses=True)
    assert local <= set(result_options(poses, "align"))
    for name, value in (("cone", 5.0), ("local_coarse_iters", 2), ("pose_sigma", 1.0)):
        assert result_options(dataclasses.replace(poses, **{name: value}), "align") != \
            result_options(poses, "align"), name
    assert {f.name for f in fields if f.metadata.get("from_poses_only")} == local

    @dataclasses.dataclass
    class Forgotten(AlignOptions):
        new_option: float = 1.0
    import deephemnma.core.config as config
    monkeypatch.setattr(config, "AlignOptions", Forgotten)
    with pytest.raises(TypeError, match="new_option"):
        result_options(Forgotten(), "align")
