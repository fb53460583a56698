"""Network, training, model files and inference."""
import os

import numpy as np
import pytest
import torch

from deephemnma.core import rotations
from deephemnma.core.image import rotate_images
from deephemnma.core.inference import Predictor
from deephemnma.core.network import DeepHEMNMANet, ResNet34, load_torchvision_weights
from deephemnma.core.projector import project
from deephemnma.core.training import (LabelCodec, TrainConfig, augment_batch, split_indices,
                                      train)
from deephemnma.errors import InputError
from deephemnma.io.metadata import Table, image_ref, read_metadata, write_xmd
from deephemnma.io.models import load_model, save_model

from conftest import shared_file

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
    save_model(tmp_path / "m.pt", {"shifts": net}, {"x": 1})
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


@pytest.fixture(scope="module")
def tiny_data():
    from deephemnma.commands.simulate import load_reference
    from deephemnma.core.simulate import simulate
    s, modes = load_reference(shared_file("continuousflex", "AK.pdb"))
    ch = list(simulate(s.coords, s.weights, modes.vectors, 72, box=32, pixel_size=2.6,
                       snr=None, ctf=False, seed=4, render_factor=1))
    return np.concatenate([c[1] for c in ch]), Table.concatenate([c[2] for c in ch])


def test_overfit_resume_model_file_and_predict(tiny_data, tmp_path):
    imgs, t = tiny_data
    cfg = TrainConfig(epochs=16, batch_size=16, lr=3e-3, val_fraction=0.1, test_fraction=0.0,
                      dropout=0.0, device="cpu", patience=100)
    def stop_at_10(msg):
        if msg.startswith("epoch 10:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):          # killed after epoch 10 ...
        train(imgs, t, tmp_path / "m", cfg, [7, 8, 9], 2.6, quiet=True, log=stop_at_10)
    best_before = load_model(tmp_path / "m" / "model.pt")[1]["best_val_loss"]
    res = train(imgs, t, tmp_path / "m", cfg, [7, 8, 9], 2.6, resume=True, quiet=True,
                log=lambda *a: None)                # ... and resumed to the end
    h = res["history"]
    assert [r["epoch"] for r in h] == list(range(1, 17))
    assert h[-1]["train_loss"] < 0.8 * h[0]["train_loss"]      # learns the training set
    assert res["best_val_loss"] <= best_before
    assert (tmp_path / "m" / "curves.png").exists()
    nets, meta = load_model(tmp_path / "m" / "model.pt")
    assert meta["mode_numbers"] == [7, 8, 9] and meta["image_size"] == 32
    raw = torch.load(tmp_path / "m" / "model.pt", weights_only=True)   # no code executed
    assert raw["format"] == "deephemnma-model"
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
    from deephemnma.core.image import downscale
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


def test_bad_inputs(tiny_data, tmp_path):
    imgs, t = tiny_data
    t2 = t.copy()
    q = t2["nmaDisplacements"].copy()
    q[3, 1] = np.nan
    t2["nmaDisplacements"] = q
    with pytest.raises(InputError, match="NaN"):
        train(imgs, t2, tmp_path / "x", TrainConfig(epochs=1), quiet=True)
    with pytest.raises(InputError, match="batch size"):
        train(imgs[:40], t.subset(np.arange(40)), tmp_path / "y",
              TrainConfig(epochs=1, batch_size=64), quiet=True)
    with pytest.raises(InputError, match="dropout"):
        train(imgs, t, tmp_path / "d", TrainConfig(epochs=1, dropout=1.5), quiet=True)
    with pytest.raises(InputError, match="modes"):
        train(imgs, t, tmp_path / "z", TrainConfig(epochs=1), mode_numbers=[7, 8], quiet=True)
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
    import csv
    import os
    import subprocess
    import sys
    from deephemnma.commands.simulate import load_reference
    from deephemnma.core.simulate import simulate_to_folder
    s, modes = load_reference(shared_file("continuousflex", "AK.pdb"))
    simulate_to_folder(tmp_path / "d", s, modes, 96, box=32, pixel_size=2.6, snr=None,
                       ctf=False, seed=2, quiet=True, render_factor=1)
    common = ["train", "--particles", str(tmp_path / "d" / "particles.xmd"), "--epochs", "3",
              "--batch-size", "16", "--dropout", "0", "--device", "cpu", "--mode-list", "7-9",
              "--test-fraction", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1")
    subprocess.run([sys.executable, "-m", "deephemnma"] + common + ["--out", str(tmp_path / "a")],
                   env=env, check=True, capture_output=True, timeout=600)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29527", "-m", "deephemnma"] + common +
                       ["--out", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    def curve(d):
        with open(tmp_path / d / "curves.csv") as f:
            return [float(row["val_loss"]) for row in csv.DictReader(f)]
    a, b = curve("a"), curve("b")
    assert len(a) == len(b) == 3
    assert a != b                      # the distributed path really ran (half batches)
    assert abs(a[-1] - b[-1]) / a[-1] < 0.25, (a, b)
    nets, meta = load_model(tmp_path / "b" / "model.pt")
    assert meta["mode_numbers"] == [7, 8, 9]
