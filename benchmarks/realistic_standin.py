"""A stand-in for real particles: AK images as a Scipion particles .sqlite
with CTF and the poses of a consensus refinement, for the real-data workflow
template (deephemnma/templates/real_data_workflow.json.template).

``n`` images of AK (all heavy atoms) deformed along modes 7-9 on the paper's
helix, uniform orientations, shifts U[-2, 2] Å, rendered as Gaussian atoms at
the output sampling, and degraded as real particles are:

* each particle has its own CTF: defocus U[0.8, 2.5] µm with up to 0.05 µm of
  astigmatism at a random angle (300 kV, Cs 2.7 mm, amplitude contrast 0.1);
* a B-factor (80 Å² by default) as the envelope exp(-B k² / 4) of the CTF;
* noise at ``snr`` (var(signal) / var(noise) over the box, 0.07 by default)
  in the output images, half of its variance "structural" (modulated by the
  CTF), half white, plus a slowly varying background: a linear ice gradient of
  0.3 noise std from edge to edge in a random direction and a random offset
  (0.5 noise std);
* not phase-flipped.

The particles carry a consensus refinement's alignment: the true orientation
rotated by ``pose_error`` degrees (3) about a random axis, the shift moved by
``shift_error`` Å (0.5) in a random direction, no amplitudes.

Written in ``folder``: ``particles.mrcs`` (header pixel size),
``particles.sqlite`` (Scipion SetOfParticles: pixel size, acquisition, each
particle's CTF and alignment), ``truth.xmd`` (the true angles, shifts in
pixels with Xmipp's sign, ``nmaDisplacements`` and CTF) and ``poses.xmd`` (the
poses stored in the sqlite).

    python benchmarks/realistic_standin.py OUT [-n 3000] [--box 256] [--pixel-size 0.65]

Writing the sqlite needs Scipion (pwem); the images alone do not.
"""
import argparse
import os
import time

import numpy as np
import torch

#: the CTF and noise of the stand-in (real-data-like values)
DEFAULTS = dict(voltage=300.0, cs=2.7, q0=0.1, defocus_range=(8000.0, 25000.0),
                astigmatism=500.0, bfactor=80.0, snr=0.07, gradient=0.3, offset=0.5,
                shift_range=2.0, pose_error=3.0, shift_error=0.5)


def perturbed_poses(angles, shifts, deg, shift_px, rng):
    """Each orientation rotated by ``deg`` degrees about a random axis, each
    shift moved by ``shift_px`` pixels in a random direction."""
    from scipy.spatial.transform import Rotation
    from deephemnma.core import rotations as R
    n = len(angles)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(axis * np.radians(deg)).as_matrix()
    ang = R.matrix_to_euler(dR @ R.euler_to_matrix(angles))
    phi = rng.uniform(0, 2 * np.pi, n)
    return ang, shifts + shift_px * np.column_stack([np.cos(phi), np.sin(phi)])


def render(n, box, pixel_size, seed=0, mode_list="7-9", chunk=64, **opts):
    """(images float32 (n, box, box), truth Table, poses Table, modes)."""
    from deephemnma.core import rotations
    from deephemnma.core.ctf import CTFParams, apply_ctf
    from deephemnma.core.projector import Projector
    from deephemnma.core.simulate import sample_amplitudes
    from deephemnma.data import data_file
    from deephemnma.io.metadata import Table
    from deephemnma.stages.reference import check_fits, load_reference
    o = dict(DEFAULTS, **opts)
    s, modes = load_reference(data_file("AK.pdb"), "heavy", None, mode_list)
    check_fits(s, box, pixel_size)
    rng = np.random.default_rng(seed)
    q = sample_amplitudes("helix", n, len(modes.numbers), rng)
    angles = rotations.random_euler(n, rng)
    shifts = rng.uniform(-o["shift_range"], o["shift_range"], (n, 2)) / pixel_size
    du = rng.uniform(*o["defocus_range"], n)
    dv = du - rng.uniform(0, o["astigmatism"], n)
    dang = rng.uniform(0, 180, n)
    ctf = CTFParams(du, dv, dang, o["voltage"], o["cs"], o["q0"], bfactor=o["bfactor"])
    seeds = rng.integers(0, 2 ** 63 - 1, n)
    proj = Projector(s.coords, s.weights, modes.vectors, box, pixel_size, sigma=1.0)
    yy, xx = (np.mgrid[0:box, 0:box] - box / 2) / box
    out = np.empty((n, box, box), np.float32)
    for a in range(0, n, chunk):
        e = min(n, a + chunk)
        c = ctf.subset(slice(a, e))
        img = proj(q[a:e], rotations.euler_to_matrix(angles[a:e]), shifts[a:e])
        clean = apply_ctf(img, c, pixel_size)
        var = clean.var(dim=(-2, -1), keepdim=True) / o["snr"]
        g = [torch.Generator().manual_seed(int(x)) for x in seeds[a:e]]
        n1 = apply_ctf(torch.stack([torch.randn(box, box, generator=k) for k in g]),
                       c, pixel_size)
        n1 = n1 / n1.std(dim=(-2, -1), keepdim=True) * torch.sqrt(var / 2)
        n2 = torch.stack([torch.randn(box, box, generator=k) for k in g]) * torch.sqrt(var / 2)
        sd = torch.sqrt(var)[:, 0, 0].numpy()
        th = rng.uniform(0, 2 * np.pi, e - a)
        ramp = (np.cos(th)[:, None, None] * xx + np.sin(th)[:, None, None] * yy)
        bg = sd[:, None, None] * (o["gradient"] * ramp
                                  + o["offset"] * rng.normal(size=(e - a, 1, 1)))
        out[a:e] = (clean + n1 + n2).numpy() + bg
    truth = Table({"itemId": np.arange(1, n + 1), "angleRot": angles[:, 0],
                   "angleTilt": angles[:, 1], "anglePsi": angles[:, 2],
                   "shiftX": shifts[:, 0], "shiftY": shifts[:, 1], "nmaDisplacements": q})
    for k, v in ctf.to_columns().items():
        truth[k] = v
    ang, sh = perturbed_poses(angles, shifts, o["pose_error"], o["shift_error"] / pixel_size,
                              np.random.default_rng(seed + 1))
    poses = truth.copy()
    del poses["nmaDisplacements"]
    poses["angleRot"], poses["angleTilt"], poses["anglePsi"] = ang.T
    poses["shiftX"], poses["shiftY"] = sh.T
    return out, truth, poses, modes


def write_sqlite(path, stack, poses, pixel_size, voltage, cs, q0):
    """``poses`` (angles, shifts in px, CTF columns) as a Scipion
    SetOfParticles at ``path``, images ``k@stack``."""
    import pwem.objects as emobj
    from deephemnma.protocols.convert import matrix_from_geometry
    parts = emobj.SetOfParticles(filename=path)
    parts.setSamplingRate(pixel_size)
    acq = emobj.Acquisition(voltage=voltage, sphericalAberration=cs, amplitudeContrast=q0,
                            magnification=50000)
    parts.setAcquisition(acq)
    parts.setHasCTF(True)
    parts.setAlignmentProj()
    A, S = poses.angles(), poses.shifts()
    for k in range(len(poses)):
        p = emobj.Particle(location=(k + 1, stack))
        p.setObjId(k + 1)
        p.setAcquisition(acq)
        p.setCTF(emobj.CTFModel(defocusU=float(poses["ctfDefocusU"][k]),
                                defocusV=float(poses["ctfDefocusV"][k]),
                                defocusAngle=float(poses["ctfDefocusAngle"][k])))
        p.setTransform(emobj.Transform(matrix_from_geometry(A[k], S[k])))
        parts.append(p)
    parts.write()
    parts.close()


def make_standin(folder, n=3000, box=256, pixel_size=0.65, seed=0, sqlite=True, **opts):
    """Write the stand-in in ``folder`` (see the module's doc); returns
    {"stack", "sqlite", "truth", "poses", "seconds"} (tables as Tables,
    ``sqlite`` None when not written)."""
    from deephemnma.io.metadata import image_ref, write_xmd
    from deephemnma.io.stacks import write_stack
    o = dict(DEFAULTS, **opts)
    t0 = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    images, truth, poses, _ = render(n, box, pixel_size, seed, **opts)
    stack = os.path.abspath(os.path.join(folder, "particles.mrcs"))
    write_stack(stack, images, pixel_size)
    for name, t in (("truth.xmd", truth), ("poses.xmd", poses)):
        t = t.copy()
        t["image"] = np.array([image_ref(i, "particles.mrcs") for i in t["itemId"]], object)
        write_xmd(os.path.join(folder, name), t)
    path = None
    if sqlite:
        path = os.path.abspath(os.path.join(folder, "particles.sqlite"))
        write_sqlite(path, stack, poses, pixel_size, o["voltage"], o["cs"], o["q0"])
    return {"stack": stack, "sqlite": path, "truth": truth, "poses": poses,
            "seconds": time.perf_counter() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--box", type=int, default=256)
    ap.add_argument("--pixel-size", type=float, default=0.65)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from deephemnma.tests import scipion_domain        # Scipion's environment first
    scipion_domain()
    r = make_standin(a.out, a.n, a.box, a.pixel_size, a.seed)
    print(f"{a.n} particles, {a.box} px at {a.pixel_size} Å/px: {r['sqlite']} "
          f"({r['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
