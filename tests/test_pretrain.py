"""Pretraining on images simulated from the reference and its modes (train
--pretrain-simulated N): validation, what a run records, resume, and the noise
level of the simulated images."""
import json
import os

import numpy as np
import pytest
import torch

from deephemnma.core.ctf import CTFParams
from deephemnma.core.models import load_model
from deephemnma.core.nma import write_continuousflex
from deephemnma.core.simulate import simulate
from deephemnma.core.training import (background_noise, label_table, particle_radius,
                                      simulate_like)
from deephemnma.errors import InputError
from deephemnma.io.metadata import Table, image_ref, write_xmd
from deephemnma.io.stacks import write_stack
from deephemnma.stages import train as stage
from deephemnma.stages.reference import load_reference

from conftest import shared_file

BOX, PS = 32, 2.6
RUN = dict(epochs=1, batch_size=8, val_fraction=0.25, test_fraction=0.0, input_size=16,
           dropout=0.0, device="cpu", patience=100, coord_channels=True)


@pytest.fixture(scope="module")
def ref():
    return load_reference(shared_file("continuousflex", "AK.pdb"))


def _particles(ref, n, snr, seed=5):
    """n AK images (32 px, 2.6 Å/px) with a CTF and noise at ``snr`` in the
    images, not phase-flipped, and their labels (with CTF columns)."""
    s, modes = ref
    ch = list(simulate(s.coords, s.weights, modes.vectors, n, box=BOX, pixel_size=PS, snr=snr,
                       ctf=True, defocus=8000.0, seed=seed, render_factor=1, shift_range=2.0))
    return np.concatenate([c[1] for c in ch]), Table.concatenate([c[2] for c in ch])


@pytest.fixture(scope="module")
def data(ref, tmp_path_factory):
    """24 labelled particles (p.xmd/.mrcs), the AK reference and its modes folder."""
    d = tmp_path_factory.mktemp("pre")
    imgs, t = _particles(ref, 24, snr=0.5)
    write_stack(d / "p.mrcs", imgs, PS)
    t["image"] = np.array([image_ref(i, "p.mrcs") for i in range(1, 25)], dtype=object)
    write_xmd(d / "p.xmd", t)
    write_continuousflex(ref[1], d / "modes")
    return d, dict(particles=str(d / "p.xmd"), structure=str(shared_file("continuousflex",
                                                                         "AK.pdb")),
                   modes=str(d / "modes"))


def test_validation_errors(data, tmp_path):
    """Impossible pretraining options are one-line InputErrors before anything
    is written."""
    d, files = data
    out = str(tmp_path / "x")
    for change, message in [({"pretrain_simulated": -1}, "--pretrain-simulated must be >= 0"),
                            ({"pretrain_simulated": 64, "modes": None}, "give --structure and"),
                            ({"pretrain_simulated": 64, "structure": None},
                             "give --structure and"),
                            ({"pretrain_simulated": 64, "pretrain_epochs": 0},
                             "--pretrain-epochs must be >= 1"),
                            ({"pretrain_simulated": 4}, "fewer images than the batch"),
                            ({"pretrain_simulated": 2.5}, "whole number"),
                            ({"pretrain_simulated": 64, "modes": str(tmp_path / "none")},
                             "--modes: path not found")]:
        cfg = stage.Config(out=out, **dict(RUN, **dict(files, **change)))
        with pytest.raises(InputError, match=message) as e:
            stage.run(cfg, progress=False)
        assert "\n" not in str(e.value)
        assert not os.path.exists(out)


def test_noise_level_matches_the_particles(ref):
    """The simulated images' background noise and SNR (the same estimator,
    on the images the network sees: phase-flipped) are the particles' within
    a factor 1.5, at a low and a high SNR; the SNRs differ by > 10x, so the
    match is not a coincidence of the estimator."""
    s, modes = ref
    est = []
    for snr in (0.1, 3.0):
        imgs, t = _particles(ref, 96, snr, seed=8)
        ctf = CTFParams.from_table(t)
        from deephemnma.core.training import phase_flip_images
        seen = phase_flip_images(imgs, ctf, PS)
        r = particle_radius(s.coords, BOX, PS, np.abs(t.shifts()).max())
        _, snr_p = background_noise(seen, r)
        sims, st = simulate_like(s.coords, s.weights, modes.vectors, label_table(t), 96, BOX, PS,
                                 snr_p, ctf, seed=1, render_factor=1)
        _, snr_s = background_noise(sims, r)
        assert 1 / 1.5 < snr_s / snr_p < 1.5, (snr, snr_p, snr_s)
        # the labels: amplitudes within the particles' range, shifts theirs, CTF rows theirs
        q, qs = t["nmaDisplacements"], st["nmaDisplacements"]
        assert (qs >= q.min(0) - 1e-9).all() and (qs <= q.max(0) + 1e-9).all()
        assert set(map(tuple, np.round(st.shifts(), 9))) <= set(map(tuple, np.round(t.shifts(),
                                                                                     9)))
        assert set(st["ctfDefocusU"]) <= set(t["ctfDefocusU"])
        est.append(snr_p)
    assert est[1] > 10 * est[0]


def test_run_records_pretraining_and_resume(data, tmp_path, capsys):
    """A tiny run with pretraining writes a model whose meta and config.json
    record the pretraining (images, epochs, digests, noise level); its
    weights differ from a run without pretraining; running again is done;
    another N starts afresh (the pretraining too) and says so."""
    d, files = data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = stage.Config(out=str(tmp_path / "m"), pretrain_simulated=32, pretrain_epochs=1,
                           **dict(RUN, **files))
        res = stage.run(cfg, progress=False)
        assert os.path.exists(res.model) and os.path.exists(res.pretrain)
        assert res.n_pretrain == 32 and res.pretrain_epochs_done == 1
        _, meta = load_model(res.model)
        p = meta["pretraining"]
        assert p["images"] == 32 and p["epochs"] == 1 and p["mode_numbers"] == [7, 8, 9]
        assert p["snr"] > 0 and len(p["modes_digest"]) == 16
        info = json.load(open(res.config))
        assert info["pretraining"]["images"] == 32
        assert info["stamp"]["pretraining"]["images"] == 32
        assert info["config"]["pretrain_simulated"] == 32
        assert any("pretrained on 32 images" in line for line in stage.summary(res, cfg))
        plain = stage.run(cfg.replace(out=str(tmp_path / "plain"), pretrain_simulated=0),
                          progress=False)
        assert "pretraining" not in load_model(plain.model)[1]
        w = {k: v for k, v in load_model(res.model)[0]["joint"].state_dict().items()}
        w0 = load_model(plain.model)[0]["joint"].state_dict()
        assert any(not torch.equal(w[k], w0[k]) for k in w)
        capsys.readouterr()
        assert stage.run(cfg, progress=False).already_done
        again = stage.run(cfg.replace(pretrain_simulated=40), progress=False)
        err = capsys.readouterr().err
        assert "starting afresh" in err and "pretraining" in err
        assert "pretraining of another run" in err
        assert again.start_epoch == 0 and again.pretrain_epochs_done == 1
        assert load_model(again.model)[1]["pretraining"]["images"] == 40
    finally:
        torch.set_num_threads(threads)
