"""The predict stage: streaming, resuming after kill -9, run stamps, rejected
rows, checks of the stacks and the model, paths of the outputs.

The model is a freshly initialised joint network on 16 px images saved with
core.models.save_model (no training: the tests are about the plumbing, and the
predictions of a random network are as deterministic as those of a trained
one)."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from deephemnma.cli import main as cli
from deephemnma.core.inference import Predictor
from deephemnma.core.models import load_model, save_model
from deephemnma.core.network import DeepHEMNMANet
from deephemnma.io.metadata import Table, image_ref, read_metadata, write_xmd
from deephemnma.io.stacks import load_images, write_stack
from deephemnma.stages import predict

BOX, PS = 16, 2.6          # px, Å/px of the test images and models
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(path, seed=0, pixel_size=PS, nan=False):
    """A joint network of random weights (seed) for BOX px images, as a model file."""
    torch.manual_seed(seed)
    net = DeepHEMNMANet({"amplitudes": 3, "orientation": 4, "shifts": 2}, dropout=0.0)
    if nan:
        with torch.no_grad():
            net.heads["shifts"].bias[0] = float("nan")
    meta = {"architecture": "joint", "image_size": BOX, "input_size": BOX,
            "pixel_size": pixel_size, "mode_numbers": [7, 8, 9],
            "amplitude_mean": [0.0, 1.0, -1.0], "amplitude_std": [1.0, 2.0, 0.5],
            "shift_mean": [0.0, 0.0], "shift_std": [1.5, 1.5]}
    save_model(path, {"joint": net}, meta)
    return str(path)


def _images(n, seed=0, box=BOX):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, box, box)).astype(np.float32)


def _particles(stem, imgs, pixel_size=PS, rows=None, ctf=True, **columns):
    """STEM.mrcs (header pixel size ``pixel_size``; None: none) + STEM.xmd
    referencing its images (``rows``: which, in that order), with itemId and
    CTF columns. Returns the .xmd path."""
    stem = str(stem)
    if not os.path.exists(f"{stem}.mrcs") or rows is None:
        write_stack(f"{stem}.mrcs", imgs, pixel_size)
    rows = np.arange(len(imgs)) if rows is None else np.asarray(rows)
    name = os.path.basename(f"{stem}.mrcs")
    t = Table({"itemId": rows + 1,
               "image": np.array([image_ref(i + 1, name) for i in rows], dtype=object)})
    if ctf:
        t["ctfDefocusU"] = 15000.0 + rows
        t["ctfDefocusV"] = 14000.0 + rows
        t["ctfDefocusAngle"] = np.zeros(len(rows))
    for k, v in columns.items():
        t[k] = v
    write_xmd(f"{stem}.xmd", t)
    return f"{stem}.xmd"


def _argv(model, particles, out, *more):
    return ["predict", "--model", str(model), "--particles", str(particles), "--out", str(out),
            "--device", "cpu", *map(str, more)]


def _rows(path):
    """The data lines of an .xmd (what a user's tools read)."""
    with open(path) as f:
        lines = [ln.strip() for ln in f]
    start = max(i for i, ln in enumerate(lines) if ln.startswith("_")) + 1
    return [ln for ln in lines[start:] if ln]


def _files(folder):
    """Every file and folder under ``folder`` (hidden ones too)."""
    found = []
    for d, dirs, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(d, f), folder) for f in dirs + files]
    return sorted(found)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"a": _model(d / "a.pt", 0), "b": _model(d / "b.pt", 1)}


# --------------------------------------------------------------------------
def test_predictions_and_paths_from_another_folder(models, tmp_path):
    """The output (in a folder that does not exist yet) holds the input rows in
    order with the network's predictions, and its image references resolve from
    its own folder (and are absolute with --absolute-paths)."""
    imgs = _images(13)
    (tmp_path / "in").mkdir()
    src = _particles(tmp_path / "in" / "s", imgs)
    out = tmp_path / "far" / "away" / "p.xmd"
    assert cli(_argv(models["a"], src, out, "--chunk", 5, "--batch-size", 2)) == 0
    t = read_metadata(out)
    assert list(t["itemId"]) == list(range(1, 14))
    assert all(r.startswith("0000") and "../../in/s.mrcs" in r for r in t["image"])
    assert np.array_equal(load_images(t), imgs)
    nets, meta = load_model(models["a"])
    ref = Predictor(nets, meta).predict(imgs)
    assert np.allclose(t["nmaDisplacements"], ref["amplitudes"], rtol=1e-6, atol=1e-6)
    assert np.allclose(t.angles(), ref["angles"], atol=1e-4)
    assert np.allclose(t.shifts(), ref["shifts"], rtol=1e-6, atol=1e-6)
    assert np.array_equal(t["ctfDefocusU"], 15000.0 + np.arange(13))     # input columns kept
    assert not os.path.exists(str(out) + ".parts")
    assert sorted(os.listdir(out.parent)) == ["p.run.json", "p.xmd"]
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o666 & ~_umask())
    # absolute references, usable from anywhere
    out2 = tmp_path / "abs" / "p.xmd"
    assert cli(_argv(models["a"], src, out2, "--absolute-paths")) == 0
    t2 = read_metadata(out2)
    assert all(os.path.isabs(r.split("@", 1)[1]) for r in t2["image"])
    assert np.array_equal(load_images(t2), imgs)


def test_rescale_larger_images(models, tmp_path, capsys):
    """32 px images of the same field as the 16 px model (1.3 Å/px): refused
    without --rescale or at another pixel size; with it, Fourier-cropped to
    16 px, and the shifts come back in the 32 px images' pixels (twice)."""
    from deephemnma.core.image import downscale
    imgs = _images(7)
    F = np.fft.fftshift(np.fft.fft2(imgs), axes=(-2, -1))
    big = np.zeros((len(imgs), 2 * BOX, 2 * BOX), complex)
    big[:, BOX // 2:3 * BOX // 2, BOX // 2:3 * BOX // 2] = F
    up = np.fft.ifft2(np.fft.ifftshift(big, axes=(-2, -1))).real.astype(np.float32) * 4
    src = _particles(tmp_path / "big", up, PS / 2)
    out = tmp_path / "p.xmd"
    assert cli(_argv(models["a"], src, out)) == 2
    assert "trained on 16 px images, these are 32 px" in capsys.readouterr().err
    assert cli(_argv(models["a"], src, out, "--rescale", "--pixel-size", PS)) == 2
    assert "header pixel size 1.3" in capsys.readouterr().err
    _particles(tmp_path / "nohdr", up, None)
    assert cli(_argv(models["a"], tmp_path / "nohdr.xmd", out, "--rescale",
                     "--pixel-size", PS)) == 2                             # not the same field
    assert "5.2 Å/px once cropped to 16 px" in capsys.readouterr().err
    assert not out.exists() and not os.path.exists(str(out) + ".parts")
    assert cli(_argv(models["a"], src, out, "--rescale", "--chunk", 3)) == 0
    t = read_metadata(out)
    nets, meta = load_model(models["a"])
    ref = Predictor(nets, meta).predict(downscale(torch.from_numpy(up), BOX).numpy())
    assert np.allclose(t["nmaDisplacements"], ref["amplitudes"], rtol=1e-5, atol=1e-5)
    assert np.allclose(t.shifts(), 2 * ref["shifts"], rtol=1e-5, atol=1e-5)
    assert np.abs(ref["shifts"]).max() > 1e-2                # the factor 2 is visible


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_bad_rows_rejected_alone(models, tmp_path):
    """A NaN image and a NaN defocus reject their rows alone (listed with the
    reason beside the output, counted); the other rows' lines are exactly those
    of a run on the input without the two rows (same chunks and batches)."""
    imgs = _images(23)
    bad = imgs.copy()
    bad[6, 3, 3] = np.nan
    defocus = 15000.0 + np.arange(23)
    defocus[11] = np.nan
    src = _particles(tmp_path / "s", bad, ctfDefocusU=defocus)
    keep = np.setdiff1d(np.arange(23), [6, 11])
    clean = _particles(tmp_path / "c", imgs, rows=keep)
    opts = ("--chunk", 4, "--batch-size", 3)
    assert cli(_argv(models["a"], src, tmp_path / "o" / "p.xmd", *opts)) == 0
    assert cli(_argv(models["a"], clean, tmp_path / "o" / "q.xmd", *opts)) == 0
    got = read_metadata(tmp_path / "o" / "p.xmd")
    want = read_metadata(tmp_path / "o" / "q.xmd")
    assert list(got["itemId"]) == list(keep + 1)
    assert len(got) == 21 and not (tmp_path / "o" / "q.rejected.xmd").exists()
    for c in ("nmaDisplacements", "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY"):
        assert np.array_equal(got[c], want[c]), c          # bit-identical (as written)
    rej = read_metadata(tmp_path / "o" / "p.rejected.xmd")
    assert list(rej["itemId"]) == [7, 12]
    reasons = dict(zip(rej["itemId"], rej["rejectReason"]))
    assert "image" in reasons[7] and "non-finite value" in reasons[12]
    assert np.isnan(load_images(rej)[list(rej["itemId"]).index(7)]).any()   # refs resolve


def test_nan_prediction_rejected_and_resumed(models, tmp_path, monkeypatch, capsys):
    """A row whose prediction is not finite is never written: it is listed in
    the rejected file, also when the run is interrupted and resumed."""
    imgs = _images(10)
    imgs[4] += 100.0                                 # the marked row
    src = _particles(tmp_path / "s", imgs)
    real = Predictor.predict
    calls = []

    def nan_for_marked(self, x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt                  # interrupted in the third chunk
        res = real(self, x)
        marked = np.asarray(x).mean((1, 2)) > 50
        res["shifts"][marked] = np.nan
        return res
    monkeypatch.setattr(Predictor, "predict", nan_for_marked)
    argv = _argv(models["a"], src, tmp_path / "p.xmd", "--chunk", 3)
    assert cli(argv) == 130
    assert os.path.exists(tmp_path / "p.xmd.parts" / "000000001.rejected.xmd")
    calls[:] = [0, 0, 0, 0]                          # no more interruptions
    capsys.readouterr()
    assert cli(argv) == 0
    assert calls[4:] == [3, 1]                       # chunks 3 and 4 only
    out = capsys.readouterr().out
    assert "predicted 9 images" in out and "1 non-finite prediction" in out
    t = read_metadata(tmp_path / "p.xmd")
    assert 5 not in list(t["itemId"]) and len(t) == 9 and np.isfinite(t.shifts()).all()
    rej = read_metadata(tmp_path / "p.rejected.xmd")
    assert list(rej["itemId"]) == [5] and rej["rejectReason"][0] == "non-finite prediction"
    assert np.array_equal(load_images(rej)[0], imgs[4])


# --------------------------------------------------------------------------
# kill -9 at several points, then the same command again
KILLER = r"""
import os, shutil, signal, sys, time
point, name = sys.argv[1], sys.argv[2]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
real, real_rm = os.replace, shutil.rmtree
def replace(a, b):
    if point == "replace" and os.path.basename(os.fspath(b)) == name:
        die()                      # NAME is written, not yet renamed
    if point == "slow" and os.fspath(b).endswith(".xmd"):
        time.sleep(float(name))    # a slow disk: the test has time to kill from outside
    return real(a, b)
def rmtree(p, *a, **k):
    if point == "rmtree" and os.fspath(p).endswith(name):
        die()                      # the output is joined, OUT.parts not removed yet
    return real_rm(p, *a, **k)
os.replace, shutil.rmtree = replace, rmtree
from deephemnma.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="module")
def kill_set(models, tmp_path_factory):
    """120 particles and the output of an uninterrupted run (chunks of 3)."""
    d = tmp_path_factory.mktemp("kill")
    src = _particles(d / "s", _images(120, seed=5))
    opts = ("--chunk", 3, "--batch-size", 2)
    (d / "ref").mkdir()
    assert cli(_argv(models["a"], src, d / "ref" / "p.xmd", *opts)) == 0
    return d, src, opts, _rows(d / "ref" / "p.xmd")


def _finish_and_compare(kill_set, models, folder, capsys, resumed_at_least):
    d, src, opts, ref = kill_set
    capsys.readouterr()
    assert cli(_argv(models["a"], src, folder / "p.xmd", *opts)) == 0
    said = capsys.readouterr()
    assert "starting afresh" not in said.err
    done = re.search(r"continued an interrupted run: (\d+) chunk", said.out)
    assert done and int(done.group(1)) >= resumed_at_least, said.out
    assert _rows(folder / "p.xmd") == ref           # the same rows, once, in order
    # no parts, no temporary files
    assert sorted(os.listdir(folder)) == ["p.run.json", "p.xmd"]


@pytest.mark.parametrize("parts", [1, 9])
def test_kill_after_parts_then_resume(kill_set, models, capsys, parts):
    """kill -9 from outside once ``parts`` chunks exist (each file takes 20 ms
    more to write, so the run is still going); the rerun does only what is
    left and gives the uninterrupted run's output exactly."""
    d, src, opts, ref = kill_set
    folder = d / f"after{parts}"
    folder.mkdir()
    argv = _argv(models["a"], src, folder / "p.xmd", *opts)
    p = subprocess.Popen([sys.executable, "-c", KILLER, "slow", "0.02", *argv], env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(glob.glob(str(folder / "p.xmd.parts" / "*.xmd"))) < parts:
        assert p.poll() is None, p.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL
    p.stderr.close()
    assert not (folder / "p.xmd").exists()
    assert len(glob.glob(str(folder / "p.xmd.parts" / "0*.xmd"))) >= parts
    _finish_and_compare(kill_set, models, folder, capsys, parts)


@pytest.mark.parametrize("point,name,resumed", [
    ("replace", "000000002.xmd", 2),      # during the write of the third part
    ("replace", "p.xmd", 40),             # during the write of the joined output
    ("rmtree", "p.xmd.parts", 40)])       # after the join, before the parts are removed
def test_kill_at_a_chosen_moment_then_resume(kill_set, models, capsys, point, name, resumed):
    d, src, opts, ref = kill_set
    folder = d / f"{point}_{name}"
    folder.mkdir()
    argv = _argv(models["a"], src, folder / "p.xmd", *opts)
    r = subprocess.run([sys.executable, "-c", KILLER, point, name, *argv], env=_env(),
                       capture_output=True)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    if point == "replace":
        assert glob.glob(str(folder / "**" / ".*.tmp*"), recursive=True)   # a stale tmp file
    _finish_and_compare(kill_set, models, folder, capsys, resumed)


def test_other_input_or_model_starts_afresh(models, tmp_path, monkeypatch, capsys):
    """Parts left by an interrupted run are never mixed with another input
    (other rows in the same file, or other images in the same stack) or another
    model: one line says the run starts afresh and the result is that of an
    uninterrupted run."""
    imgs = _images(20, seed=2)
    src = _particles(tmp_path / "s", imgs)
    opts = ("--chunk", 4)
    real = Predictor.predict

    def interrupted(model, particles):
        calls = []

        def predict_twice(self, x):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(self, x)
        monkeypatch.setattr(Predictor, "predict", predict_twice)
        assert cli(_argv(model, particles, tmp_path / "p.xmd", *opts)) == 130
        monkeypatch.setattr(Predictor, "predict", real)
        assert len(glob.glob(str(tmp_path / "p.xmd.parts" / "0*.xmd"))) == 2

    def fresh(model, particles, name):
        assert cli(_argv(model, particles, tmp_path / name, *opts)) == 0
        return _rows(tmp_path / name)

    def finish(model, particles, want):
        capsys.readouterr()
        assert cli(_argv(model, particles, tmp_path / "p.xmd", *opts)) == 0
        err = capsys.readouterr().err
        assert [ln for ln in err.splitlines() if ln.strip()] == [
            f"predict: {tmp_path / 'p.xmd.parts'} holds work of another input or other "
            "options; starting afresh"]
        assert _rows(tmp_path / "p.xmd") == want

    # another model
    interrupted(models["a"], src)
    finish(models["b"], src, fresh(models["b"], src, "ref_b.xmd"))
    # the same file with other rows (reversed)
    interrupted(models["a"], src)
    _particles(tmp_path / "s", imgs, rows=np.arange(20)[::-1])
    want = fresh(models["a"], src, "ref_rev.xmd")
    finish(models["a"], src, want)
    # the same metadata, other images in the stack
    interrupted(models["a"], src)
    time.sleep(0.01)
    write_stack(tmp_path / "s.mrcs", _images(20, seed=3), PS)
    finish(models["a"], src, fresh(models["a"], src, "ref_new.xmd"))
    assert _rows(tmp_path / "p.xmd") != want


# --------------------------------------------------------------------------
def _bad_cases(tmp_path, models):
    """(name, argv tail or callable building it, expected words in the message)."""
    imgs = _images(6)
    ok = _particles(tmp_path / "ok", imgs)
    (tmp_path / "empty.pt").write_bytes(b"")
    with open(models["a"], "rb") as f:
        (tmp_path / "cut.pt").write_bytes(f.read(5000))
    _model(tmp_path / "nan.pt", nan=True)
    _model(tmp_path / "nops.pt", pixel_size=0.0)
    write_xmd(tmp_path / "none.xmd", Table({"image": np.array([], dtype=object)}))
    write_stack(tmp_path / "big.mrcs", _images(2, box=20), PS)
    mixed = read_metadata(ok)
    mixed["image"] = np.array(list(mixed["image"][:5]) + ["000001@big.mrcs"], dtype=object)
    write_xmd(tmp_path / "mixed.xmd", mixed)
    far = read_metadata(ok)
    far["image"] = np.array(list(far["image"][:5]) + ["000009@ok.mrcs"], dtype=object)
    write_xmd(tmp_path / "far.xmd", far)
    _particles(tmp_path / "nohdr", imgs, pixel_size=None)
    _particles(tmp_path / "big20", _images(3, box=20), PS)
    _particles(tmp_path / "nan", np.full((3, BOX, BOX), np.nan, np.float32))
    a, out = models["a"], tmp_path / "out" / "p.xmd"
    return [
        ("output is the particles", _argv(a, ok, ok), "also an input"),
        ("output is the model", _argv(a, ok, a), "also an input"),
        ("output is a folder", _argv(a, ok, tmp_path), "folder"),
        ("0-byte model", _argv(tmp_path / "empty.pt", ok, out), "empty file"),
        ("truncated model", _argv(tmp_path / "cut.pt", ok, out), "not a deephemnma model"),
        ("NaN weights", _argv(tmp_path / "nan.pt", ok, out), "non-finite weights"),
        ("missing model", _argv(tmp_path / "no.pt", ok, out), "not found"),
        ("missing particles", _argv(a, tmp_path / "no.xmd", out), "not found"),
        ("zero particles", _argv(a, tmp_path / "none.xmd", out), "no particles"),
        ("chunk 0", _argv(a, ok, out, "--chunk", 0), "--chunk"),
        ("batch -1", _argv(a, ok, out, "--batch-size", -1), "--batch-size"),
        ("pixel size 0", _argv(a, ok, out, "--pixel-size", 0), "--pixel-size"),
        ("unknown device", _argv(a, ok, out)[:-1] + ["gpu7"], "--device"),
        ("header vs --pixel-size", _argv(a, ok, out, "--pixel-size", 3), "header pixel size"),
        ("model vs images' pixel size", _argv(a, tmp_path / "nohdr.xmd", out, "--pixel-size",
                                              3), "trained at 2.6"),
        ("no pixel size anywhere", _argv(a, tmp_path / "nohdr.xmd", out), "give --pixel-size"),
        ("model without pixel size", _argv(tmp_path / "nops.pt", ok, out), "give --pixel-size"),
        ("mixed boxes", _argv(a, tmp_path / "mixed.xmd", out), "mixed boxes"),
        ("box of another model", _argv(a, tmp_path / "big20.xmd", out), "16 px"),
        ("image number beyond the stack", _argv(a, tmp_path / "far.xmd", out), "image 9"),
        ("every image unusable (found while predicting)",
         _argv(a, tmp_path / "nan.xmd", tmp_path / "new" / "deeper" / "p.xmd"),
         "no usable particle"),
    ]


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_bad_inputs_refused(models, tmp_path, capsys):
    """Every case: exit 2, one line naming the problem, nothing written."""
    for name, argv, words in _bad_cases(tmp_path, models):
        before = _files(tmp_path)
        capsys.readouterr()
        assert cli(argv) == 2, name
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("deephemnma predict: error:"), (name, err)
        assert words in err[0], (name, err[0])
        assert _files(tmp_path) == before, name


def test_model_without_pixel_size_with_pixel_size_given(tmp_path, capsys):
    """An older model file (pixel size 0) is used when --pixel-size is given,
    and the summary says the pixel size was not checked."""
    src = _particles(tmp_path / "s", _images(4), pixel_size=None)
    m = _model(tmp_path / "old.pt", pixel_size=0.0)
    assert cli(_argv(m, src, tmp_path / "p.xmd", "--pixel-size", 5)) == 0
    assert "could not be checked" in capsys.readouterr().out
    assert len(read_metadata(tmp_path / "p.xmd")) == 4


def test_config_checks_options_without_files():
    """The Scipion form validates the options before the files exist."""
    cfg = predict.Config(model="later.pt", particles="later.xmd", out="p.xmd")
    assert cfg.validate_options() is cfg
    for bad in (dict(chunk=0), dict(batch_size=0), dict(pixel_size=-1.0),
                dict(device="tpu")):
        with pytest.raises(predict.InputError):
            cfg.replace(**bad).validate_options()
    with pytest.raises(predict.InputError, match="not found"):
        cfg.validate()


def test_protocol_validates_with_the_config():
    """The Scipion form shows the stage's own messages for impossible options
    and builds the stage's Config (no command line in between)."""
    pytest.importorskip("pyworkflow")
    from deephemnma.protocols.protocol_predict import DeepHEMNMAProtPredict
    prot = DeepHEMNMAProtPredict()
    assert prot._validate() == []
    prot.batchSize.set(0)
    # the form's own validator refuses it (pyworkflow shows that); not repeated
    assert prot.getDefinition().getParam("batchSize").validate(0)
    assert prot._validate() == []
    cfg = prot._config()
    assert isinstance(cfg, predict.Config) and cfg.rescale and cfg.batch_size == 0
    assert cfg.out.endswith("predicted.xmd") and cfg.particles.endswith("input.xmd")
