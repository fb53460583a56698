"""The GPU check: the core GPU-relevant computations give on the device what
they give on the CPU (``gpu`` marker: step (a) of benchmarks/gpu_check.py),
and the whole gpu_check.py runs end to end on tiny sizes on the CPU.

The ``gpu`` tests run on ``$DEEPHEMNMA_TEST_DEVICE`` (gpu_check.py sets it),
else on CUDA when there is one, else they skip. On the CPU they compare the
CPU with itself (gpu_check.py --tiny --device cpu): the code paths run, the
tolerances are those a GPU must meet (float32 sums in another order, bf16
autocast in the network)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, shared_file

DEVICE = os.environ.get("DEEPHEMNMA_TEST_DEVICE") or ("cuda" if torch.cuda.is_available()
                                                      else None)


@pytest.fixture(scope="module")
def ak():
    from deephemnma.stages.reference import load_reference
    return load_reference(shared_file("continuousflex", "AK.pdb"))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE is None, reason="no CUDA device (DEEPHEMNMA_TEST_DEVICE names another)")
def test_projector_on_device_equals_cpu(ak):
    """Projections and their gradients (HEMNMA's refinement) on the device
    equal the CPU's to float32 precision."""
    from deephemnma.core import rotations
    from deephemnma.core.projector import Projector
    s, modes = ak
    rng = np.random.default_rng(0)
    q = torch.tensor(rng.normal(0, 80, (6, 3)), dtype=torch.float32)
    A = torch.tensor(rotations.euler_to_matrix(rotations.random_euler(6, rng)),
                     dtype=torch.float32)
    sh = torch.tensor(rng.uniform(-2, 2, (6, 2)), dtype=torch.float32)
    out = {}
    for dev in ("cpu", DEVICE):
        P = Projector(s.coords, s.weights, modes.vectors, 48, 1.8, device=dev)
        qq = q.to(dev).requires_grad_()
        img = P(qq, A.to(dev), sh.to(dev))
        img.square().sum().backward()
        out[dev] = (img.detach().cpu().numpy(), qq.grad.cpu().numpy())
    assert _rel(out[DEVICE][0], out["cpu"][0]) < 1e-4
    assert _rel(out[DEVICE][1], out["cpu"][1]) < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE is None, reason="no CUDA device (DEEPHEMNMA_TEST_DEVICE names another)")
def test_ctf_and_phase_flip_on_device_equal_cpu():
    from deephemnma.core.ctf import CTFParams, apply_ctf, ctf_image, phase_flip
    p = CTFParams([12000.0, 8000.0], [11000.0, 8500.0], [30.0, 0.0], 200.0, 2.0, 0.1)
    x = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(1))
    cpu = [ctf_image(p, 64, 1.3), apply_ctf(x, p, 1.3), phase_flip(x, p, 1.3)]
    dev = [ctf_image(p, 64, 1.3, device=DEVICE), apply_ctf(x.to(DEVICE), p, 1.3),
           phase_flip(x.to(DEVICE), p, 1.3)]
    for a, b in zip(dev, cpu):
        assert _rel(a.cpu(), b) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE is None, reason="no CUDA device (DEEPHEMNMA_TEST_DEVICE names another)")
def test_align_on_device_equals_cpu(ak):
    """HEMNMA (global search + refinement) finds the same poses and amplitudes
    on the device as on the CPU, close to the truth (noiseless images)."""
    from deephemnma.core import rotations as R
    from deephemnma.core.align import AlignOptions, Aligner
    from deephemnma.core.simulate import simulate
    s, modes = ak
    ch = list(simulate(s.coords, s.weights, modes.vectors, 4, box=32, pixel_size=2.6, snr=None,
                       ctf=False, seed=5, render_factor=1, amplitude_scale=120))
    imgs, t = ch[0][1], ch[0][2]
    res = {}
    for dev in ("cpu", DEVICE):
        al = Aligner(s.coords, s.weights, modes.vectors, 32, 2.6,
                     AlignOptions(angular_step=20.0, coarse_iters=15, fine_iters=10,
                                  device=dev))
        res[dev] = al.align(imgs)
    a, b = res[DEVICE], res["cpu"]
    d = R.angular_distance(R.euler_to_matrix(a["angles"]), R.euler_to_matrix(b["angles"]))
    assert d.max() < 1.0
    assert np.abs(a["shifts"] - b["shifts"]).max() < 0.2
    assert np.abs(a["amplitudes"] - b["amplitudes"]).max() < 8.0
    truth = R.angular_distance(R.euler_to_matrix(b["angles"]), R.euler_to_matrix(t.angles()))
    assert np.median(truth) < 5.0


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE is None, reason="no CUDA device (DEEPHEMNMA_TEST_DEVICE names another)")
def test_train_step_on_device_equals_cpu(ak):
    """The same network (seed) on the same batches: validation loss before
    training and the loss of one epoch (bf16 autocast on CUDA) agree with the
    CPU's within a few percent; the paper's augmented copies run there too."""
    from deephemnma.core.config import TrainConfig
    from deephemnma.core.simulate import simulate
    from deephemnma.core.training import Trainer
    s, modes = ak
    ch = list(simulate(s.coords, s.weights, modes.vectors, 24, box=32, pixel_size=2.6,
                       snr=None, ctf=False, seed=2, render_factor=1))
    imgs, t = ch[0][1], ch[0][2]
    out = {}
    for dev in ("cpu", DEVICE):
        cfg = TrainConfig(batch_size=8, lr=1e-4, dropout=0.0, device=dev, seed=3,
                          augment_copies=1)
        tr = Trainer(imgs, t, np.arange(16), cfg)
        before, _ = tr.evaluate(np.arange(16, 24))
        loss = tr.train_epoch(0, np.arange(16))
        out[dev] = (before, loss)
    assert out[DEVICE][0] == pytest.approx(out["cpu"][0], rel=0.03)
    assert out[DEVICE][1] == pytest.approx(out["cpu"][1], rel=0.05)
    assert np.isfinite(out[DEVICE]).all()


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE is None, reason="no CUDA device (DEEPHEMNMA_TEST_DEVICE names another)")
def test_predict_on_device_equals_cpu():
    """The Predictor (phase flip from the CTF, normalisation, bf16 network on
    CUDA, decoding) gives the CPU's amplitudes, shifts and angles."""
    from deephemnma.core import rotations as R
    from deephemnma.core.ctf import CTFParams
    from deephemnma.core.inference import Predictor
    from deephemnma.core.network import DeepHEMNMANet
    torch.manual_seed(0)
    net = DeepHEMNMANet({"amplitudes": 3, "orientation": 4, "shifts": 2}, dropout=0.0).eval()
    meta = {"image_size": 32, "input_size": 32, "pixel_size": 2.6, "phase_flip": True,
            "amplitude_mean": [0.0, 0.0, 0.0], "amplitude_std": [50.0, 50.0, 50.0],
            "shift_mean": [0.0, 0.0], "shift_std": [1.0, 1.0]}
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 32, 32)).astype(np.float32)
    ctf = CTFParams(np.full(16, 9000.0), voltage=200.0, cs=2.0)
    res = {}
    for dev in ("cpu", DEVICE):
        p = Predictor({"joint": net}, meta, dev, batch_size=8)
        p.check(32, 2.6)
        res[dev] = p.predict(x, ctf)
    a, b = res[DEVICE], res["cpu"]
    assert np.abs(a["amplitudes"] - b["amplitudes"]).max() < 0.05 * 50 * 3
    assert np.abs(a["shifts"] - b["shifts"]).max() < 0.05 * 3
    d = R.angular_distance(R.euler_to_matrix(a["angles"]), R.euler_to_matrix(b["angles"]))
    assert np.median(d) < 3.0


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE is None, reason="no CUDA device (DEEPHEMNMA_TEST_DEVICE names another)")
def test_reconstruct_on_device_equals_cpu(ak):
    from deephemnma.core import rotations
    from deephemnma.core.ctf import CTFParams, apply_ctf
    from deephemnma.core.projector import Projector
    from deephemnma.core.reconstruct import reconstruct
    s, modes = ak
    rng = np.random.default_rng(4)
    n = 60
    ang = rotations.random_euler(n, rng)
    sh = rng.uniform(-1, 1, (n, 2))
    P = Projector(s.coords, s.weights, modes.vectors, 32, 2.6)
    img = P(torch.zeros(n, 3), torch.tensor(rotations.euler_to_matrix(ang), dtype=torch.float32),
            torch.tensor(sh, dtype=torch.float32))
    ctf = CTFParams(rng.uniform(8000, 15000, n), voltage=200.0, cs=2.0)
    img = apply_ctf(img, ctf, 2.6).numpy()
    cpu = reconstruct(img, ang, sh, ctf, 2.6)
    dev = reconstruct(img, ang, sh, ctf, 2.6, device=DEVICE)
    assert _rel(dev, cpu) < 1e-3
    assert np.corrcoef(dev.ravel(), cpu.ravel())[0, 1] > 0.99999


def test_gpu_check_tiny_on_cpu(tmp_path):
    """benchmarks/gpu_check.py --tiny --device cpu: every step (a)-(e) runs and
    is reported (report.json and report.md), with its time and numbers."""
    if os.environ.get("DEEPHEMNMA_GPU_CHECK_NESTED"):
        pytest.skip("inside gpu_check.py's own test run")
    shared_file("continuousflex", "AK.pdb")
    env = dict(os.environ, OMP_NUM_THREADS="2", DEEPHEMNMA_QUIET="1", MPLBACKEND="Agg",
               PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"),
                        "--tiny", "--device", "cpu", "--out", str(tmp_path / "out"),
                        "--work", str(tmp_path / "work")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(rep["steps"]) == list("abcde")
    for k, s in rep["steps"].items():
        assert s["status"] == "ok", (k, s.get("error"), s.get("traceback"))
        assert s["seconds"] >= 0 and s["results"]
    a = rep["steps"]["a"]["results"]["counts"]
    assert a.get("passed", 0) >= 6 and not a.get("failed")
    b = rep["steps"]["b"]["results"]
    assert b["images_per_s"] > 0 and b["hemnma_vs_ground_truth"]["n"] == b["probe_images"]
    c = rep["steps"]["c"]["results"]
    assert c["epochs"] == 1 and "inferred vs ground truth" in c["table1"]
    assert c["paper_schedule_400_epochs_14055_images_h"] > 0
    d = rep["steps"]["d"]["results"]
    assert d["images"] == 2048 and d["end_to_end_rows"] == 2048 and d["phase_flipped"] == 2048
    e = rep["steps"]["e"]["results"]
    assert len(e["groups"]) == 10
    assert set(e["groups"][0]["fsc"]) == {"ground truth", "network", "HEMNMA",
                                          "network refined by HEMNMA", "network, whole group"}
    md = (tmp_path / "out" / "report.md").read_text()
    for k in "abcde":
        assert f"| ({k})" in md
    assert "## (c) Table 1" in md and "## (e) Fig. 7" in md
