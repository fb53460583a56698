"""Network, the one image normaliser, training (the train stage: resume,
kill -9 safety, rejected rows, pixel size), model files and inference."""
import glob
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from deephemnma.core import rotations
from deephemnma.core.image import downscale, normalize
from deephemnma.core.inference import Predictor
from deephemnma.core.models import load_model, save_model
from deephemnma.core.network import DeepHEMNMANet, ResNet34, load_torchvision_weights
from deephemnma.core.projector import project
from deephemnma.core.training import LabelCodec, augment_batch, read_checkpoint, split_indices
from deephemnma.errors import InputError
from deephemnma.io.metadata import Table, image_ref, read_metadata, write_xmd
from deephemnma.stages import train as stage

from conftest import ROOT, shared_file

# parameter names and shapes of torchvision's resnet34 (from its architecture)
_TV_LAYERS = {"layer1": (64, 3), "layer2": (128, 4), "layer3": (256, 6), "layer4": (512, 3)}


def test_resnet34_matches_torchvision_layout():
    sd = ResNet34(in_channels=3).state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7) and sd["fc.weight"].shape == (1000, 512)
    cin = 64
    for name, (c, blocks) in _TV_LAYERS.items():
        for b in range(blocks):
            assert sd[f"{name}.{b}.conv1.weight"].shape[:2] == (c, cin if b == 0 else c)
            assert sd[f"{name}.{b}.bn2.running_mean"].shape == (c,)
        assert (f"{name}.0.downsample.0.weight" in sd) == (name != "layer1")
        cin = c
    n_params = sum(p.numel() for p in ResNet34(3).parameters())
    assert n_params == 21797672          # torchvision resnet34's parameter count


@pytest.mark.gpu
def test_torchvision_parity():
    tv = pytest.importorskip("torchvision")
    ref = tv.models.resnet34(weights=None).eval()
    ours = load_torchvision_weights(ResNet34(1), ref.state_dict()).eval()
    x = torch.randn(2, 1, 64, 64)
    assert torch.allclose(ours(x), ref(x.expand(-1, 3, -1, -1)), atol=1e-4)


def test_heads_quaternion_round_trip():
    net = DeepHEMNMANet({"amplitudes": 3, "orientation": 4, "shifts": 2}).eval()
    out = net(torch.randn(4, 64, 64))
    assert out["amplitudes"].shape == (4, 3) and out["shifts"].shape == (4, 2)
    assert torch.allclose(out["orientation"].norm(dim=1), torch.ones(4), atol=1e-5)
    t = Table({"angleRot": [10.0, 200.0], "angleTilt": [0.0, 120.0], "anglePsi": [30.0, -60.0],
               "shiftX": [1.0, -1.0], "shiftY": [0.5, 2.0], "nmaDisplacements": [[1, 2], [3, 4.]]})
    codec = LabelCodec.fit(t)
    enc = codec.encode(t)
    dec = codec.decode({k: enc[k] for k in enc})
    assert np.allclose(dec["amplitudes"], t["nmaDisplacements"])
    assert np.allclose(dec["shifts"], t.shifts())
    d = rotations.angular_distance(rotations.euler_to_matrix(dec["angles"]),
                                   rotations.euler_to_matrix(t.angles()))
    assert d.max() < 1e-6


def test_coord_channels_round_trip(tmp_path):
    """Coordinate channels: a 3-channel stem (torchvision's shape), and a model
    saved with them loads with them and predicts the same."""
    torch.manual_seed(0)
    net = DeepHEMNMANet({"shifts": 2}, dropout=0.0, coord_channels=True).eval()
    assert net.trunk.conv1.weight.shape == (64, 3, 7, 7)
    save_model(tmp_path / "m.pt", {"shifts": net},
               {"image_size": 32, "amplitude_mean": [], "amplitude_std": [],
                "shift_mean": [0, 0], "shift_std": [1, 1]})
    nets, _ = load_model(tmp_path / "m.pt")
    assert nets["shifts"].coord_channels
    xb = torch.randn(3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(nets["shifts"](xb)["shifts"], net(xb)["shifts"], atol=1e-6)
        # the same image moved by 4 px gives another answer
        assert not torch.allclose(net(xb)["shifts"], net(torch.roll(xb, 4, -1))["shifts"],
                                  atol=1e-4)


def test_split_no_leakage():
    groups = np.repeat(np.arange(100), 3)            # 3 copies of each particle
    tr, va, te = split_indices(300, 0.1, 0.2, seed=1, groups=groups)
    assert len(tr) + len(va) + len(te) == 300
    sets = [set(groups[i]) for i in (tr, va, te)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(sets[2]) == 20 and len(sets[1]) == 10


def test_augmentation_is_label_consistent():
    """Rotating the image in-plane with the augmented labels equals the
    projection at those labels (rendered by the projector)."""
    from deephemnma.core.structure import read_structure
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb")).center()
    rng = np.random.default_rng(3)
    ang = rotations.random_euler(4, rng)
    sh = rng.uniform(-3, 3, (4, 2))
    X = torch.tensor(s.coords)
    w = torch.tensor(s.weights)

    def render(a, t):
        return project(X, w, torch.tensor(rotations.euler_to_matrix(a)), torch.tensor(t), 64,
                       1.5, sigma=2.0)
    img = render(ang, sh)
    rot, ang2, sh2 = augment_batch(img, ang, sh, np.random.default_rng(9))
    expect = render(ang2, sh2)
    for a, b in zip(rot, expect):
        assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.99
    # a wrong rule (shift not rotated) is detectably worse
    bad = render(ang2, sh)
    worse = [np.corrcoef(a.flatten(), b.flatten())[0, 1] for a, b in zip(rot, bad)]
    assert min(worse) < 0.99


def test_normalize_is_the_one_normaliser():
    """core.image.normalize (training and inference): per-image zero mean and
    unit std, after the optional Fourier downscaling; a constant image -> 0."""
    x = torch.randn(3, 32, 32) * 5 + 2
    n = normalize(x)
    assert torch.allclose(n.mean((-2, -1)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(n.std((-2, -1)), torch.ones(3), atol=1e-5)
    assert torch.equal(normalize(x, 16), normalize(downscale(x, 16)))
    assert normalize(x, 16).shape == (3, 16, 16)
    assert torch.equal(normalize(torch.full((1, 8, 8), 3.0)), torch.zeros(1, 8, 8))


def _simulate(n, seed):
    """n noiseless 32 px projections of AK (2.6 Å/px) deformed along modes
    7-9: (images, Table of their labels with itemId)."""
    from deephemnma.core.simulate import simulate
    from deephemnma.stages.reference import load_reference
    s, modes = load_reference(shared_file("continuousflex", "AK.pdb"))
    ch = list(simulate(s.coords, s.weights, modes.vectors, n, box=32, pixel_size=2.6,
                       snr=None, ctf=False, seed=seed, render_factor=1))
    return np.concatenate([c[1] for c in ch]), Table.concatenate([c[2] for c in ch])


def _labelled(stem, imgs, table, pixel_size=2.6):
    """STEM.mrcs (header: pixel_size) + STEM.xmd with ``table``'s labels
    referencing those images, in order. Returns the .xmd path."""
    from deephemnma.io.stacks import write_stack
    write_stack(f"{stem}.mrcs", imgs, pixel_size)
    t = table.copy()
    t["image"] = np.array([image_ref(i, os.path.basename(f"{stem}.mrcs"))
                           for i in range(1, len(imgs) + 1)], dtype=object)
    write_xmd(f"{stem}.xmd", t)
    return f"{stem}.xmd"


def _weights(path):
    nets, meta = load_model(path)
    return {f"{k}.{p}": t for k, n in nets.items() for p, t in n.state_dict().items()}, meta


def _same_weights(a, b):
    wa, wb = _weights(a)[0], _weights(b)[0]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def tiny_data():
    return _simulate(72, seed=4)


def test_overfit_model_file_and_predict(tiny_data, tmp_path):
    """The train stage learns the training set; its model file describes
    itself (pixel size from the stack header, mode numbers) and predicts."""
    imgs, t = tiny_data
    cfg = stage.Config(particles=_labelled(tmp_path / "train", imgs, t), out=str(tmp_path / "m"),
                       epochs=16, batch_size=16, lr=3e-3, val_fraction=0.1,
                       test_fraction=0.0, dropout=0.0, device="cpu", patience=100)
    res = stage.run(cfg, progress=False)
    h = stage.read_curves(res.curves_csv)
    assert [r["epoch"] for r in h] == list(range(1, 17)) and res.epochs_done == 16
    assert h[-1]["train_loss"] < 0.8 * h[0]["train_loss"]      # learns the training set
    assert res.best_val_loss == min(r["val_loss"] for r in h)
    assert os.path.exists(res.curves_png) and not os.path.exists(res.rejected)
    nets, meta = load_model(res.model)
    assert meta["mode_numbers"] == [7, 8, 9] and meta["image_size"] == 32
    assert meta["pixel_size"] == pytest.approx(2.6)               # from the header
    assert meta["best_epoch"] == res.best_epoch
    raw = torch.load(res.model, weights_only=True)               # no code executed
    assert raw["format"] == "deephemnma-model"
    split = np.load(res.split)
    assert sorted(np.concatenate([split["train"], split["val"]])) == list(range(72))
    p = Predictor(nets, meta).predict(imgs[:20])
    assert p["amplitudes"].shape == (20, 3) and p["angles"].shape == (20, 3)
    with pytest.raises(InputError, match="32 px"):
        Predictor(nets, meta).check(64)
    _predict_command_streams_and_resumes(tmp_path, imgs[:50], p, nets, meta)
    _predict_rescales_larger_images(tmp_path, imgs[:20], nets, meta)


def _particles(stem, imgs, pixel_size):
    """STEM.mrcs + STEM.xmd referencing its images."""
    from deephemnma.io.stacks import write_stack
    write_stack(f"{stem}.mrcs", imgs, pixel_size)
    name = os.path.basename(f"{stem}.mrcs")
    write_xmd(f"{stem}.xmd", Table({"image": [image_ref(i, name)
                                              for i in range(1, len(imgs) + 1)]}))


def _predict_rescales_larger_images(tmp_path, imgs, nets, meta):
    """64 px images of the same field as the 32 px model (2.6 Å/px): refused
    without --rescale; with it, Fourier-cropped to 32 px and shifts returned in
    64 px pixels (twice the model's)."""
    from deephemnma.cli import main as cli
    F = np.fft.fftshift(np.fft.fft2(imgs), axes=(-2, -1))
    big = np.zeros((len(imgs), 64, 64), complex)
    big[:, 16:48, 16:48] = F
    up = np.fft.ifft2(np.fft.ifftshift(big, axes=(-2, -1))).real.astype(np.float32) * 4
    back = downscale(torch.from_numpy(up), 32).numpy()
    assert np.corrcoef(back.ravel(), imgs.ravel())[0, 1] > 0.99      # the same images
    _particles(tmp_path / "big", up, 1.3)
    argv = ["predict", "--model", str(tmp_path / "m" / "model.pt"), "--particles",
            str(tmp_path / "big.xmd"), "--out", str(tmp_path / "big_pred.xmd"), "--device", "cpu"]
    assert cli(argv + ["--pixel-size", "1.3"]) == 2          # refused: 64 px for a 32 px model
    assert cli(argv + ["--pixel-size", "2.6", "--rescale"]) == 2     # not the same field
    assert not (tmp_path / "big_pred.xmd").exists()
    assert not (tmp_path / "big_pred.xmd.parts").exists()         # nothing half-written
    assert cli(argv + ["--pixel-size", "1.3", "--rescale"]) == 0
    out = read_metadata(tmp_path / "big_pred.xmd")
    ref = Predictor(nets, meta).predict(back)
    assert np.allclose(out["nmaDisplacements"], ref["amplitudes"], atol=1e-3)
    assert np.allclose(out.angles(), ref["angles"], atol=1e-2)
    assert np.allclose(out.shifts(), 2 * ref["shifts"], atol=1e-4)
    assert np.abs(ref["shifts"]).max() > 1e-3                 # the factor 2 is visible


def _predict_command_streams_and_resumes(tmp_path, imgs, direct, nets, meta):
    """`deephemnma predict` in chunks of 16: killed during the third chunk, the
    same command finishes only what is left; the .xmd equals one in-memory pass."""
    from deephemnma.cli import main as cli
    from deephemnma.core import inference
    _particles(tmp_path / "s", imgs, 2.6)
    argv = ["predict", "--model", str(tmp_path / "m" / "model.pt"), "--particles",
            str(tmp_path / "s.xmd"), "--out", str(tmp_path / "p.xmd"), "--chunk", "16",
            "--batch-size", "8", "--device", "cpu"]
    calls = []
    real = inference.Predictor.predict

    def killed_at_third(self, x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, x)
    inference.Predictor.predict = killed_at_third
    try:
        assert cli(argv) == 130
        assert not (tmp_path / "p.xmd").exists()
        calls.clear()
        inference.Predictor.predict = lambda self, x: calls.append(len(x)) or real(self, x)
        assert cli(argv) == 0
    finally:
        inference.Predictor.predict = real
    assert calls == [16, 2]                         # chunks 1 and 2 were not redone
    assert not (tmp_path / "p.xmd.parts").exists()
    out = read_metadata(tmp_path / "p.xmd")
    assert list(out["itemId"]) == list(range(1, len(imgs) + 1))
    full = Predictor(nets, meta).predict(imgs)
    assert np.allclose(full["amplitudes"][:20], direct["amplitudes"], atol=1e-4)
    assert np.allclose(out["nmaDisplacements"], full["amplitudes"], atol=1e-4)
    assert np.allclose(out.angles(), full["angles"], atol=1e-3)
    assert np.allclose(out.shifts(), full["shifts"], atol=1e-5)


# --------------------------------------------------------------------------
# resuming, kill -9, rejected rows, restart
RUN = dict(epochs=3, batch_size=8, val_fraction=0.25, test_fraction=0.0, input_size=16,
           dropout=0.2, device="cpu", patience=100)
CLI = ["--epochs", "3", "--batch-size", "8", "--val-fraction", "0.25", "--test-fraction", "0",
       "--input-size", "16", "--dropout", "0.2", "--device", "cpu", "--patience", "100",
       "--pixel-size", "2.6"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1", MKL_NUM_THREADS="1",
           PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """24 particles (32 px, 2.6 Å/px in the stack header) and the outputs of an
    uninterrupted 3-epoch run of them (in this process, on one thread as the
    command-line runs below; no --pixel-size: the header's)."""
    d = tmp_path_factory.mktemp("small")
    imgs, t = _simulate(24, seed=11)
    xmd = _labelled(d / "p", imgs, t)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = stage.run(stage.Config(particles=xmd, out=str(d / "ref"), **RUN), progress=False)
    finally:
        torch.set_num_threads(threads)
    return d, imgs, t, out


def _hidden(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def _popen(xmd, out):
    return subprocess.Popen([sys.executable, "-m", "deephemnma", "train", "--particles", xmd,
                             "--out", out] + CLI, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(proc, condition, timeout=120):
    t0 = time.time()
    while not condition():
        assert proc.poll() is None, "the run ended before the kill: " + proc.communicate()[1]
        assert time.time() - t0 < timeout, "kill point never reached"
        time.sleep(0.003)
    proc.kill()                                                 # SIGKILL
    proc.wait()


def test_kill_during_and_after_checkpoint_then_resume(small, tmp_path):
    """kill -9 while last.pt of epoch 2 is being written (a partial hidden
    temporary file is left; last.pt is epoch 1's), then kill -9 right after
    epoch 2's checkpoint; the same command then finishes epoch 3 only. The
    model and the curves equal those of the uninterrupted run bit for bit.
    Run once more: nothing to do."""
    d, _, _, ref = small
    xmd, out = str(d / "p.xmd"), str(tmp_path / "tr")
    last = os.path.join(out, "last.pt")

    def saving_epoch_2():
        tmp = glob.glob(os.path.join(out, ".last.*.tmp.pt"))
        return os.path.exists(last) and tmp and os.path.getsize(tmp[0]) > (1 << 20)
    _kill_when(_popen(xmd, out), saving_epoch_2)
    stale = _hidden(out)
    assert any(n.startswith(".last.") for n in stale), stale
    assert read_checkpoint(last)["run"]["epoch"] == 1

    def epoch_2_saved():
        ck = os.path.join(out, "curves.csv")
        return os.path.exists(ck) and len(open(ck).read().splitlines()) >= 3
    _kill_when(_popen(xmd, out), epoch_2_saved)
    assert not set(stale) & set(_hidden(out))                    # stale temporaries removed
    assert read_checkpoint(last)["run"]["epoch"] == 2

    r = subprocess.run([sys.executable, "-m", "deephemnma", "train", "--particles", xmd,
                        "--out", out] + CLI, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch 2 of 3" in r.stderr and "resumed after epoch 2" in r.stdout
    assert _hidden(out) == []
    assert _same_weights(os.path.join(out, "model.pt"), ref.model)
    a = stage.read_curves(os.path.join(out, "curves.csv"))
    b = stage.read_curves(ref.curves_csv)
    assert [(r["epoch"], r["train_loss"], r["val_loss"]) for r in a] == \
        [(r["epoch"], r["train_loss"], r["val_loss"]) for r in b]
    assert _weights(os.path.join(out, "model.pt"))[1]["pixel_size"] == pytest.approx(2.6)

    mtime = os.path.getmtime(os.path.join(out, "model.pt"))
    done = stage.run(stage.Config(particles=xmd, out=out, pixel_size=2.6, **RUN),
                     progress=False)                       # the same run, once more
    assert done.already_done and done.epochs_done == 3 and done.start_epoch == 3
    assert "already trained" in stage.summary(done, stage.Config(**RUN))[0]
    assert os.path.getmtime(os.path.join(out, "model.pt")) == mtime


def test_bad_rows_rejected_alone(small, tmp_path):
    """A row with a NaN amplitude and one with a NaN image, inserted among the
    24: both listed in rejected.xmd, and the model is bit for bit that of the
    run without them; split.npz names rows of this input."""
    d, imgs, t, ref = small
    bad_label, bad_image = 5, 17                 # their positions in the new input
    keep = [i for i in range(26) if i not in (bad_label, bad_image)]
    rows = np.zeros(26, int)
    rows[keep] = np.arange(24)                   # the others: the 24 in order
    imgs2, t2 = imgs[rows].copy(), t.subset(rows)
    t2["itemId"] = np.where(np.isin(np.arange(26), keep), t2["itemId"], [100 + i for i in
                                                                         range(26)])
    q = t2["nmaDisplacements"].copy()
    q[bad_label, 1] = np.nan
    t2["nmaDisplacements"] = q
    imgs2[bad_image, 3, 4] = np.nan
    xmd = _labelled(tmp_path / "bad", imgs2, t2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = stage.run(stage.Config(particles=xmd, out=str(tmp_path / "tr"), **RUN),
                        progress=False)
    finally:
        torch.set_num_threads(threads)
    assert out.n_rejected == 2
    rej = read_metadata(out.rejected)
    assert sorted(rej["itemId"]) == [100 + bad_label, 100 + bad_image]
    assert any("left out 2" in line for line in stage.summary(out, stage.Config(**RUN)))
    assert _same_weights(out.model, ref.model)
    split, ref_split = np.load(out.split), np.load(ref.split)
    for k in ("train", "val", "test"):
        assert list(split[k]) == [keep[i] for i in ref_split[k]]


def test_restart_other_epochs_and_patience(small, tmp_path, capsys, monkeypatch):
    """--restart trains again from epoch 1 (the same weights: seeded); another
    --epochs (the schedule spans them) starts afresh and says so in one line;
    an early-stopped run is done, and a larger --patience continues it."""
    from deephemnma.core import training
    cfg = stage.Config(particles=str(small[0] / "p.xmd"), out=str(tmp_path / "tr"),
                       **dict(RUN, epochs=1))
    first = stage.run(cfg, progress=False)
    capsys.readouterr()
    again = stage.run(cfg.replace(restart=True), progress=False)
    assert capsys.readouterr().err.strip() == f"train: --restart: starting afresh in {cfg.out}"
    assert again.start_epoch == 0 and again.epochs_done == 1 and not again.already_done
    assert _same_weights(again.model, first.model)

    losses = iter([1.0, 2.0, 3.0])             # validation: epochs 2 and 3 do not improve
    monkeypatch.setattr(training.Trainer, "evaluate", lambda self, rows: (next(losses), {}))
    cfg = cfg.replace(epochs=3, patience=1)
    stopped = stage.run(cfg, progress=False)
    err = capsys.readouterr().err
    assert err.strip() == f"train: {cfg.out} holds a run with other --epochs (1 -> 3); " \
                          "starting afresh"
    assert stopped.start_epoch == 0 and stopped.epochs_done == 2 and stopped.stopped_early
    assert any("stopped early" in line for line in stage.summary(stopped, cfg))
    assert stage.run(cfg, progress=False).already_done
    more = stage.run(cfg.replace(patience=5), progress=False)
    assert "resuming after epoch 2 of 3" in capsys.readouterr().err
    assert more.start_epoch == 2 and more.epochs_done == 3 and not more.stopped_early
    assert more.best_epoch == 1 and _weights(more.model)[1]["best_epoch"] == 1
    assert len(stage.read_curves(more.curves_csv)) == 3


def test_bad_inputs(small, tmp_path, capsys):
    """Refused before anything is written (the output folder is not created):
    too large a batch, dropout 1.5, a mode list of another length, no pixel
    size anywhere, a header pixel size that differs, no particles, an
    --init-model inside --out; on the command line too."""
    from deephemnma.cli import main as cli
    d, imgs, t, ref = small
    xmd = str(d / "p.xmd")
    out = str(tmp_path / "x")
    base = dict(RUN, particles=xmd, out=out)
    for change, message in [({"batch_size": 64}, "batch size"),
                            ({"dropout": 1.5}, "dropout"),
                            ({"mode_list": "7-8"}, "mode-list"),
                            ({"pixel_size": 3.0}, "differs from --pixel-size 3"),
                            ({"val_fraction": 0.5, "test_fraction": 0.5}, "fraction"),
                            ({"init_model": ref.model, "out": str(d / "ref")}, "output folder")]:
        with pytest.raises(InputError, match=message):
            stage.run(stage.Config(**dict(base, **change)), progress=False)
        assert not os.path.exists(out)
    nohdr = _labelled(tmp_path / "nohdr", imgs, t, pixel_size=None)
    with pytest.raises(InputError, match="give --pixel-size"):
        stage.run(stage.Config(**dict(base, particles=nohdr)))
    write_xmd(tmp_path / "none.xmd", read_metadata(xmd).subset(np.zeros(24, bool)))
    with pytest.raises(InputError, match="no particles"):
        stage.run(stage.Config(**dict(base, particles=str(tmp_path / "none.xmd"))))
    assert not os.path.exists(out)
    assert cli(["train", "--particles", xmd, "--out", out, "--epochs", "5",
                "--batch-size", "64"]) == 2
    assert "batch size" in capsys.readouterr().err and not os.path.exists(out)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a deephemnma model"):
        load_model(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a deephemnma model"):
        load_model(tmp_path / "other.pt")


def test_ddp_two_processes_match_single(tmp_path):
    """`deephemnma train` under torchrun (2 CPU processes, gloo, DDP): each
    process takes half of every batch and gradients are averaged, so the run
    tracks the single-process one (BatchNorm sees half batches: not bit-equal)."""
    imgs, t = _simulate(96, seed=2)
    xmd = _labelled(tmp_path / "p", imgs, t)
    common = ["train", "--particles", xmd, "--epochs", "3", "--batch-size", "16",
              "--dropout", "0", "--device", "cpu", "--mode-list", "7-9", "--test-fraction", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1")
    subprocess.run([sys.executable, "-m", "deephemnma"] + common + ["--out", str(tmp_path / "a")],
                   env=env, check=True, capture_output=True, timeout=600)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29527", "-m", "deephemnma"] + common +
                       ["--out", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("best validation loss") == 1          # one process reports
    a = stage.read_curves(tmp_path / "a" / "curves.csv")
    b = stage.read_curves(tmp_path / "b" / "curves.csv")
    a, b = [r["val_loss"] for r in a], [r["val_loss"] for r in b]
    assert len(a) == len(b) == 3
    assert a != b                      # the distributed path really ran (half batches)
    assert abs(a[-1] - b[-1]) / a[-1] < 0.25, (a, b)
    nets, meta = load_model(tmp_path / "b" / "model.pt")
    assert meta["mode_numbers"] == [7, 8, 9]


# --------------------------------------------------------------------------
# the paper's schedule, augmentation, Mahalanobis filter and phase flip
def test_paper_schedule_adam_l2_and_lr_steps(small, tmp_path):
    """schedule='paper': Adam with the L2 term added to the gradients (not
    AdamW's decoupled decay) and the learning rate divided by 1/gamma every
    lr_step epochs; the command's --schedule paper takes the paper's numbers
    (400 epochs, batch 2, lr 1e-5, L2 1e-5) unless given."""
    from deephemnma.cli import build_parser
    from deephemnma.commands import train as command
    from deephemnma.core.training import Trainer
    d, imgs, t, _ = small
    cfg = stage.Config(particles=str(d / "p.xmd"), out=str(tmp_path / "tr"),
                       **dict(RUN, schedule="paper", lr=1e-3, lr_step=1, lr_gamma=0.5))
    res = stage.run(cfg, progress=False)
    lrs = [r["lr"] for r in stage.read_curves(res.curves_csv)]
    assert lrs == pytest.approx([5e-4, 2.5e-4, 1.25e-4])        # lr after epochs 1, 2, 3
    tr = Trainer(imgs, t, np.arange(16), cfg.training_options())
    opt = next(iter(tr.opts.values()))
    assert type(opt) is torch.optim.Adam and opt.defaults["weight_decay"] == 1e-5
    assert not opt.defaults.get("decoupled_weight_decay", False)
    # the L2 term: a weight with zero loss gradient still gets weight_decay * w
    p = torch.nn.Parameter(torch.ones(3))
    a = torch.optim.Adam([p], lr=0.1, weight_decay=1e-5)
    (0 * p.sum()).backward()
    a.step()
    assert torch.all(p < 1)
    args = build_parser().parse_args(["train", "--particles", "p.xmd", "--out", "o",
                                      "--schedule", "paper"])
    c = command.config(args)
    assert (c.schedule, c.epochs, c.batch_size, c.lr, c.weight_decay, c.lr_step, c.lr_gamma,
            c.dropout) == ("paper", 400, 2, 1e-5, 1e-5, 80, 0.1, 0.5)
    c = command.config(build_parser().parse_args(
        ["train", "--particles", "p.xmd", "--out", "o", "--schedule", "paper", "--epochs", "7"]))
    assert c.epochs == 7 and c.lr == 1e-5
    c = command.config(build_parser().parse_args(["train", "--particles", "p", "--out", "o"]))
    assert (c.schedule, c.epochs, c.lr) == ("onecycle", stage.Config().epochs, stage.Config().lr)
    for bad, msg in ((dict(schedule="cosine"), "--schedule"), (dict(lr_step=0), "--lr-step"),
                     (dict(lr_gamma=2.0), "--lr-gamma"), (dict(augment_copies=-1), "copies"),
                     (dict(augment_shift=-1.0), "--augment-shift"),
                     (dict(augment_copies=1.5), "whole number")):
        with pytest.raises(InputError, match=msg):
            cfg.replace(**bad).validate_options()


def test_shift_and_rotation_copies_are_label_consistent():
    """The paper's augmentation (Supp. D): an image rotated by alpha and moved
    by d px with the updated labels (psi + alpha, R(alpha) shift - d) equals
    the projection at those labels (rendered by the projector); moving the
    shift label the wrong way is detectably worse."""
    from deephemnma.core.structure import read_structure
    from deephemnma.core.training import transform_batch
    s, _ = read_structure(shared_file("continuousflex", "AK.pdb")).center()
    rng = np.random.default_rng(5)
    ang = rotations.random_euler(4, rng)
    sh = rng.uniform(-3, 3, (4, 2))
    alpha = rng.uniform(0, 360, 4)
    moves = np.array([[7.0, -7.0], [-6.5, 3.0], [0.5, 6.8], [-7.0, -2.0]])
    X, w = torch.tensor(s.coords), torch.tensor(s.weights)

    def render(a, t):
        return project(X, w, torch.tensor(rotations.euler_to_matrix(a)), torch.tensor(t), 64,
                       1.5, sigma=2.0)
    out, ang2, sh2 = transform_batch(render(ang, sh), ang, sh, alpha, moves)
    expect = render(ang2, sh2)
    for a, b in zip(out, expect):
        assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.99
    wrong = render(ang2, sh2 + 2 * moves)                        # shift + d instead of - d
    assert max(np.corrcoef(a.flatten(), b.flatten())[0, 1] for a, b in zip(out, wrong)) < 0.9
    # on images downscaled for the network (scale 0.5) the move is halved, labels the same
    half, ang3, sh3 = transform_batch(downscale(render(ang, sh), 32), ang, sh, alpha, moves,
                                      scale=0.5)
    assert np.allclose(sh3, sh2) and np.allclose(ang3, ang2)
    for a, b in zip(half, downscale(expect, 32)):
        assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.99


def test_trainer_copies_extend_the_epoch(tiny_data):
    """augment_copies=1: each training row r gets the copy id n + r (fixed
    rotation and move, drawn from the seed), the epoch has twice the steps,
    and a copy's inputs and targets are the transformed original's."""
    from deephemnma.core.config import TrainConfig
    from deephemnma.core.training import Trainer, transform_batch
    imgs, t = tiny_data
    n = len(t)
    cfg = TrainConfig(augment_copies=1, batch_size=8, device="cpu", input_size=16,
                      dropout=0.0)
    tr = Trainer(imgs, t, np.arange(40), cfg)
    assert tr.steps_per_epoch == 80 // 8
    assert np.abs(tr.copy_moves).max() <= 7.0 and tr.copy_moves.shape == (1, n, 2)
    x0, t0 = tr.batch(np.array([3, 5]))
    x1, t1 = tr.batch(np.array([n + 3, n + 5]))
    ref, ang, sh = transform_batch(x0, t.angles()[[3, 5]], t.shifts()[[3, 5]],
                                   tr.copy_alpha[0, [3, 5]], tr.copy_moves[0, [3, 5]],
                                   16 / 32)
    assert torch.allclose(x1, ref) and torch.equal(t1["amplitudes"], t0["amplitudes"])
    assert np.allclose(tr.codec.decode({"shifts": t1["shifts"].numpy()})["shifts"], sh,
                       atol=1e-4)
    again = Trainer(imgs, t, np.arange(40), cfg)
    assert np.array_equal(again.copy_moves, tr.copy_moves)          # fixed by the seed
    assert tr.train_epoch(0, np.arange(40)) > 0


def test_mahalanobis_statistics_from_training_rows_only():
    """The Mahalanobis filter's mean and covariance come from the training
    rows: the validation and test rows' labels (however wild) change nothing,
    and an outlier among the training rows is left out."""
    from deephemnma.core.config import TrainConfig
    from deephemnma.core.training import mahalanobis_keep, prepare_split
    rng = np.random.default_rng(0)
    n = 200
    q = rng.normal(0, 10, (n, 3))
    t = Table({"itemId": np.arange(1, n + 1), "angleRot": np.zeros(n), "angleTilt": np.zeros(n),
               "anglePsi": np.zeros(n), "nmaDisplacements": q})
    cfg = TrainConfig(mahalanobis=3.2, batch_size=8, val_fraction=0.1, test_fraction=0.2)
    tr, va, te, n_out = prepare_split(t, cfg)
    full_tr, _, full_te = split_indices(n, 0.1, 0.2, 0, t["itemId"])
    q2 = q.copy()
    q2[full_te] *= 50                                     # test labels far away
    t2 = t.copy()
    t2["nmaDisplacements"] = q2
    tr2, va2, te2, n_out2 = prepare_split(t2, cfg)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2) and n_out == n_out2
    assert np.array_equal(te2, full_te)                    # test rows are never filtered
    q3 = q.copy()
    q3[full_tr[0]] = [300.0, -300.0, 300.0]               # a training outlier
    keep, d = mahalanobis_keep(q3, full_tr, 3.2)
    assert not keep[full_tr[0]] and d[full_tr[0]] > 3.2
    t3 = t.copy()
    t3["nmaDisplacements"] = q3
    assert full_tr[0] not in prepare_split(t3, cfg)[0]


def _ctf_particles(stem, n=12, seed=3, pixel_size=2.6):
    """n noiseless 32 px AK images with a CTF (not phase-flipped) and their
    labels (with CTF columns): the .xmd path, the images and the table."""
    from deephemnma.core.simulate import simulate
    from deephemnma.stages.reference import load_reference
    s, modes = load_reference(shared_file("continuousflex", "AK.pdb"))
    ch = list(simulate(s.coords, s.weights, modes.vectors, n, box=32, pixel_size=pixel_size,
                       snr=None, ctf=True, defocus=8000.0, seed=seed, render_factor=1))
    imgs, t = np.concatenate([c[1] for c in ch]), Table.concatenate([c[2] for c in ch])
    return _labelled(stem, imgs, t, pixel_size), imgs, t


def test_network_sees_phase_flipped_images_in_training_and_prediction(tmp_path, capsys):
    """The paper's rule, end to end: train phase-flips images with CTF columns
    (unless --images-flipped) and the model says so; predict applies the same
    rule, so predicting unflipped images equals predicting their flipped
    versions; --images-flipped images are used as given. A flip of an image
    does not depend on the others (rows stay independent)."""
    from deephemnma.cli import main as cli
    from deephemnma.core.ctf import CTFParams
    from deephemnma.core.training import phase_flip_images
    xmd, imgs, t = _ctf_particles(tmp_path / "p")
    ctf = CTFParams.from_table(t)
    flipped = phase_flip_images(imgs, ctf, 2.6)
    assert not np.allclose(flipped, imgs, atol=1e-3)
    assert np.allclose(phase_flip_images(imgs[5:6], ctf.subset([5]), 2.6), flipped[5:6],
                       atol=1e-5)
    cfg = stage.Config(particles=xmd, out=str(tmp_path / "m"), **dict(RUN, epochs=1))
    data = stage._prepare(cfg)
    assert data.n_flipped == 12 and np.array_equal(data.images, flipped)
    # a bad row (NaN defocus) is left out before the flip: the others' network
    # images are bit for bit those of the input without it
    bad = t.subset(np.r_[np.arange(12), 4])
    bad["itemId"] = np.r_[np.arange(1, 13), 99]
    dfu = bad["ctfDefocusU"].astype(np.float64)
    dfu[-1] = np.nan
    bad["ctfDefocusU"] = dfu
    worse = stage._prepare(cfg.replace(particles=_labelled(tmp_path / "bad", imgs[np.r_[
        np.arange(12), 4]], bad)))
    assert len(worse.rejected) == 1 and np.array_equal(worse.images, flipped)
    as_given = stage._prepare(cfg.replace(images_flipped=True))
    assert as_given.n_flipped == 0 and np.array_equal(as_given.images, imgs)
    res = stage.run(cfg, progress=False)
    assert res.n_flipped == 12
    assert any("phase-flipped from their CTF" in line for line in stage.summary(res, cfg))
    nets, meta = load_model(res.model)
    assert meta["phase_flip"] is True and meta["train_config"]["images_flipped"] is False
    pred = Predictor(nets, meta)
    pred.check(32, 2.6)
    on_flipped = pred.predict(flipped)
    assert np.allclose(pred.predict(imgs, ctf)["amplitudes"], on_flipped["amplitudes"],
                       atol=1e-4)
    argv = ["predict", "--model", res.model, "--particles", xmd, "--device", "cpu"]
    assert cli(argv + ["--out", str(tmp_path / "a.xmd")]) == 0
    assert "12 images phase-flipped" in capsys.readouterr().out
    a = read_metadata(tmp_path / "a.xmd")
    assert np.allclose(a["nmaDisplacements"], on_flipped["amplitudes"], atol=1e-4)
    assert np.allclose(a.angles(), on_flipped["angles"], atol=1e-3)
    # images marked flipped are used as given (here: the unflipped ones, so other results)
    from deephemnma.stages import predict as pstage
    out = pstage.run(pstage.Config(model=res.model, particles=xmd, out=str(tmp_path / "b.xmd"),
                                   images_flipped=True, device="cpu"), progress=False)
    assert out.n_flipped == 0 and out.model_flips
    b = read_metadata(tmp_path / "b.xmd")
    assert np.allclose(b["nmaDisplacements"], pred.predict(imgs)["amplitudes"], atol=1e-4)
    # a model without the key (older files) saw images as given: nothing is flipped
    old = dict(meta)
    old.pop("phase_flip")
    assert not Predictor(nets, old).flips
    assert np.array_equal(Predictor(nets, old).predict(imgs, ctf)["amplitudes"],
                          Predictor(nets, old).predict(imgs)["amplitudes"])
