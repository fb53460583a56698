"""CTF against cisTEM's CTFs (npz oracle) and Xmipp's applyCTF."""
import numpy as np
import pytest
import torch

from deephemnma.core.ctf import (CTFParams, apply_ctf, ctf_image, electron_wavelength,
                                 phase_flip, wiener_filter)

from conftest import shared_file, xmipplib


def test_wavelength():
    assert electron_wavelength(300) == pytest.approx(0.019687, rel=1e-4)
    assert electron_wavelength(200) == pytest.approx(0.025079, rel=1e-4)


def test_matches_cistem():
    d = np.load(shared_file("oracles", "cistem_ctf.npz"))
    errs, low = [], []
    ky, kx = np.meshgrid(np.fft.fftfreq(128), np.fft.rfftfreq(128), indexing="ij")
    lowmask = np.sqrt(kx ** 2 + ky ** 2) < 0.25           # below half Nyquist
    for p, ref in zip(d["parameters"], d["ctf"]):
        du, dv, ang, kv, cs, q0, ps = p
        # the oracle grid is (kx, ky) (transposed: angle -> 90 - angle) and its
        # sign is the opposite of Xmipp's
        ours = -ctf_image(CTFParams(du, dv, 90.0 - ang, kv, cs, q0), 128, ps,
                          dtype=torch.float64)[0].numpy()
        errs.append(np.abs(ours - ref).max())
        low.append(np.abs(ours - ref)[lowmask].max())
    assert max(errs) < 0.025, errs
    assert max(low) < 0.005, low


def _xmipp_apply(xm, a, du, dv, ang, kv, cs, q0, ts):
    md = xm.MetaData()
    r = md.addObject()
    for label, v in ((xm.MDL_CTF_DEFOCUSU, du), (xm.MDL_CTF_DEFOCUSV, dv),
                     (xm.MDL_CTF_DEFOCUS_ANGLE, ang), (xm.MDL_CTF_VOLTAGE, kv),
                     (xm.MDL_CTF_CS, cs), (xm.MDL_CTF_Q0, q0),
                     (xm.MDL_CTF_SAMPLING_RATE, ts), (xm.MDL_CTF_K, 1.0)):
        md.setValue(label, float(v), r)
    img = xm.Image()
    img.setDataType(xm.DT_DOUBLE)
    img.setData(a)
    xm.applyCTF(img, md, float(ts), r)
    return img.getData()


@pytest.mark.parametrize("params", [(15000, 9000, 30, 200, 2.0, 0.1, 1.5),
                                    (5000, 5000, 0, 300, 2.7, 0.07, 1.0),
                                    (20000, 15000, -45, 300, 2.7, 0.1, 2.0)])
def test_matches_xmipp_apply_ctf(params):
    xm = xmipplib()
    a = np.random.default_rng(0).normal(size=(64, 64))
    theirs = _xmipp_apply(xm, a, *params)
    ours = apply_ctf(torch.tensor(a[None]), CTFParams(*params[:6]), params[6])[0].numpy()
    F = np.fft.fft2(a)
    filt_x = (np.fft.fft2(theirs) / F).real
    filt_o = (np.fft.fft2(ours) / F).real
    keep = np.ones_like(filt_x, bool)
    keep[32, :] = keep[:, 32] = False                     # Nyquist: sign of k ambiguous
    assert np.abs(filt_x - filt_o)[keep].max() < 1e-3
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99


def test_phase_flip_and_wiener():
    # non-astigmatic: the rfft grid's Nyquist row is then unambiguous
    p = CTFParams(8000, 8000, 0, 300, 2.7, 0.1)
    rng = np.random.default_rng(1)
    img = torch.tensor(rng.normal(size=(2, 64, 64)))
    c = ctf_image(CTFParams([8000, 8000]), 64, 1.2, dtype=torch.float64)
    flipped = phase_flip(apply_ctf(img, p, 1.2), p, 1.2)
    # phase flip of a CTF-filtered image = filtering by |CTF|
    expect = torch.fft.irfft2(torch.fft.rfft2(img) * c.abs(), s=(64, 64))
    assert torch.allclose(flipped, expect, atol=1e-10)
    restored = wiener_filter(apply_ctf(img, p, 1.2), p, 1.2, snr=1e10)
    good = c.abs() > 0.3
    err = (torch.fft.rfft2(restored) - torch.fft.rfft2(img)).abs()[good].max()
    assert err < 1e-3
    assert ctf_image(p, 64, 1.2)[0, 0, 0] == pytest.approx(0.1)   # Xmipp sign: +Q0 at k=0
