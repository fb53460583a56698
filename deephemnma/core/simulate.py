"""Synthetic particle images with ground truth (the paper's "Data synthesis").

The reference (e.g. AK.pdb, all heavy atoms) is deformed by normal modes with
amplitudes drawn from a law (the paper's helix ``q7 = -200 r, q8 = 200 sin(pi r),
q9 = 200 cos(pi r)``, r ~ U(0, 1); or a uniform box; or Gaussian clusters),
rotated uniformly on SO(3) (Xmipp ZYZ), shifted uniformly, projected as
Gaussian atoms, and degraded by the CTF and noise:

* rendering happens at ``render_factor`` times the output sampling (the paper
  renders 256 px at 0.325 Å and downscales to 128 px at 0.65 Å) and the images
  are then downscaled by Fourier cropping (antialiased);
* noise: SNR = var(signal) / var(noise) over the whole box, where the
  signal is the CTF-modulated noiseless projection. With ``snr_at_render=True``
  (the default of the simulate command, stage and Scipion protocol:
  stages.simulate.Config) the SNR holds at the rendering sampling and the noisy
  images are downscaled afterwards, as in the paper
  (SNR 0.1 in 256 px images at 0.325 Å/px, then downscaled to 128 px): the
  downscaling averages the noise, so the output SNR is then ~``render_factor``^2
  times higher (about 0.4 at 128 px, 1.6 at 64 px with a 256 px rendering). Following Sorzano et al.
  (2007), a fraction ``noise_before_ctf`` (default 0.5) of the final noise
  variance is "structural" noise added before the CTF (and modulated by it),
  the rest is white shot noise added after it. ``snr_at_render=False`` (this
  function's default, kept for its callers) puts the SNR in the output images
  (harder);
* shifts are stored in output pixels with Xmipp's sign (the particle sits at
  minus the stored shift). ``shift_range`` is in Å (default 1.625 Å: the
  paper's +-5 px at 0.325 Å/px).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from ..errors import InputError
from ..io.metadata import Table, image_ref, write_star, write_xmd
from ..io.stacks import StackWriter
from ..utils import Progress
from . import rotations
from .ctf import CTFParams, apply_ctf, phase_flip as _phase_flip
from .image import downscale
from .projector import Projector

if TYPE_CHECKING:
    from .nma import NormalModes
    from .structure import Structure

PathLike = Union[str, os.PathLike]     # a path as str or pathlib.Path

__all__ = ["PAPER_RENDER_PIXEL", "consensus_poses", "render_factor_for", "helix_amplitudes", "sample_amplitudes",
           "simulate", "write_dataset",
           "simulate_to_folder"]


PAPER_RENDER_PIXEL = 0.325      # Å/px at which the paper renders and adds noise


def render_factor_for(pixel_size: float, render_pixel: float = PAPER_RENDER_PIXEL) -> int:
    """Integer rendering factor bringing ``pixel_size`` (Å/px) to about the
    paper's rendering sampling (0.325 Å/px): 2 at 0.65 Å/px, 4 at 1.3 Å/px."""
    return max(1, int(round(pixel_size / render_pixel)))


def helix_amplitudes(r: float | np.ndarray, scale: float = 200.0) -> np.ndarray:
    """The paper's helix (modes 7-9): (n,) in [0, 1] -> (n, 3)."""
    r = np.asarray(r, dtype=np.float64)
    return np.stack([-scale * r, scale * np.sin(np.pi * r), scale * np.cos(np.pi * r)], -1)


def sample_amplitudes(law: str | np.ndarray, n: int, n_modes: int, rng: np.random.Generator,
                      scale: float = 200.0, n_clusters: int = 4,
                      cluster_std: float = 15.0) -> np.ndarray:
    """Amplitudes (n, n_modes) from 'helix' (3 modes), 'uniform' (box
    [-scale, scale]), 'clusters' (Gaussian blobs), or an explicit array."""
    if isinstance(law, np.ndarray):
        if law.shape != (n, n_modes):
            raise InputError(f"amplitude array has shape {law.shape}, expected {(n, n_modes)}")
        return law.astype(np.float64)
    if law == "helix":
        if n_modes != 3:
            raise InputError(f"the helix law needs exactly 3 modes (7-9), got {n_modes}")
        return helix_amplitudes(rng.uniform(0, 1, n), scale)
    if law == "uniform":
        return rng.uniform(-scale, scale, (n, n_modes))
    if law == "clusters":
        centres = rng.uniform(-scale, scale, (n_clusters, n_modes))
        return centres[rng.integers(0, n_clusters, n)] + rng.normal(0, cluster_std, (n, n_modes))
    raise InputError(f"unknown amplitude law '{law}' (helix, uniform, clusters)")


def simulate(coords: np.ndarray, weights: np.ndarray, vectors: np.ndarray, n: int,
             box: int = 128, pixel_size: float = 0.65, amplitudes: str | np.ndarray = "helix",
             snr: float | None = 0.1, ctf: bool = True, defocus: float = 5000.0,
             voltage: float = 200.0, cs: float = 2.0, q0: float = 0.1,
             shift_range: float = 1.625, render_factor: int = 2, phase_flip: bool = False,
             noise_before_ctf: float = 0.5, sigma: float | np.ndarray = 1.0, seed: int = 0,
             device: str | torch.device = "cpu", chunk: int = 512, start: int = 0,
             progress: Progress | None = None, amplitude_scale: float = 200.0,
             snr_at_render: bool = False, in_plane: bool = True
             ) -> Iterator[tuple[int, np.ndarray | None, Table]]:
    """Generator of chunks ``(start_index, images float32 (b, box, box), Table)``.

    ``coords`` (N, 3) centred reference (Å), ``weights`` (N,), ``vectors``
    (M, N, 3) unit-norm modes. Everything random is drawn up front from
    ``seed`` so chunks (and a resumed run from ``start``) are reproducible.
    ``in_plane=False``: no in-plane rotation (psi = 0; the projection
    directions stay uniform), as in rows of the paper's Supplementary Table 3;
    the other random values are those of the run with in-plane rotations."""
    if n < 1:
        raise InputError(f"number of images must be >= 1, got {n}")
    if box < 16 or box % 2:
        raise InputError(f"box must be even and >= 16, got {box}")
    if snr is not None and snr <= 0:
        raise InputError(f"SNR must be positive, got {snr}")
    vectors = np.asarray(vectors)
    if vectors.ndim != 3 or vectors.shape[1:] != np.asarray(coords).shape:
        raise InputError(f"modes have shape {vectors.shape[1:]} but the structure has "
                         f"{len(coords)} atoms")
    rng = np.random.default_rng(seed)
    M = vectors.shape[0]
    q = sample_amplitudes(amplitudes, n, M, rng, scale=amplitude_scale)
    angles = rotations.random_euler(n, rng)
    if not in_plane:
        angles[:, 2] = 0.0
    shifts = rng.uniform(-shift_range, shift_range, (n, 2)) / pixel_size   # output px
    noise_seeds = rng.integers(0, 2 ** 63 - 1, n)
    rb, rps = box * render_factor, pixel_size / render_factor
    proj = Projector(coords, weights, vectors, rb, rps, sigma=sigma, device=device)
    ctfp = CTFParams(defocus, defocus, 0.0, voltage, cs, q0) if ctf else None
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        b = e - s
        t = Table({
            "itemId": np.arange(s + 1, e + 1),
            "angleRot": angles[s:e, 0], "angleTilt": angles[s:e, 1], "anglePsi": angles[s:e, 2],
            "shiftX": shifts[s:e, 0], "shiftY": shifts[s:e, 1],
            "nmaDisplacements": q[s:e],
        })
        if ctf:
            for k, v in ctfp.to_columns().items():
                t[k] = np.full(b, v[0])
        if s < start:          # resuming: these images exist already
            yield s, None, t
            continue
        A = torch.as_tensor(rotations.euler_to_matrix(angles[s:e]), dtype=torch.float32)
        img = proj(torch.as_tensor(q[s:e]), A, torch.as_tensor(shifts[s:e] * render_factor))
        gens = [torch.Generator().manual_seed(int(x)) for x in noise_seeds[s:e]]
        clean = apply_ctf(img, ctfp, rps) if ctf else img
        clean_small = downscale(clean, box)
        if snr is not None and snr_at_render:
            var_noise = clean.var(dim=(-2, -1), keepdim=True) / snr
            n1 = torch.stack([torch.randn(rb, rb, generator=g) for g in gens]).to(img.device)
            n2 = torch.stack([torch.randn(rb, rb, generator=g) for g in gens]).to(img.device)
            n1 = apply_ctf(n1, ctfp, rps) if ctf else n1
            f = noise_before_ctf
            n1 = n1 / n1.std(dim=(-2, -1), keepdim=True) * torch.sqrt(f * var_noise)
            n2 = n2 * torch.sqrt((1 - f) * var_noise)
            out = downscale(clean + n1 + n2, box)
        elif snr is not None:
            var_noise = clean_small.var(dim=(-2, -1), keepdim=True) / snr
            n1 = torch.stack([torch.randn(rb, rb, generator=g) for g in gens]).to(img.device)
            n2 = torch.stack([torch.randn(box, box, generator=g) for g in gens]).to(img.device)
            n1 = downscale(apply_ctf(n1, ctfp, rps) if ctf else n1, box)
            f = noise_before_ctf
            n1 = n1 / n1.std(dim=(-2, -1), keepdim=True) * torch.sqrt(f * var_noise)
            n2 = n2 * torch.sqrt((1 - f) * var_noise)
            out = clean_small + n1 + n2
        else:
            out = clean_small
        if phase_flip and ctf:
            out = _phase_flip(out, ctfp, pixel_size)
        if progress is not None:
            progress.update(b)
        yield s, out.to(torch.float32).cpu().numpy(), t


def consensus_poses(angles: np.ndarray, shifts: np.ndarray, angle_error: float,
                    shift_error: float, rng: int | np.random.Generator | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Poses a few degrees and Ångströms off the true ones, as a consensus
    refinement gives them: each orientation (Xmipp Euler angles (n, 3),
    degrees) turned about a uniformly random axis by an angle whose RMS over
    the particles is ``angle_error`` degrees (rotation vector with independent
    N(0, angle_error / sqrt(3)) components), each shift (n, 2) moved by an
    offset whose RMS length is ``shift_error`` (same unit as ``shifts``;
    N(0, shift_error / sqrt(2)) per axis). Returns (angles, shifts)."""
    angles, shifts = np.asarray(angles, float), np.asarray(shifts, float)
    rng = np.random.default_rng(rng)
    n = len(angles)
    v = np.radians(rng.normal(0.0, angle_error / np.sqrt(3.0), (n, 3)))
    theta = np.linalg.norm(v, axis=1)
    axis = v / np.where(theta > 0, theta, 1.0)[:, None]
    k = np.zeros((n, 3, 3))                              # cross-product matrices of the axes
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k -= k.transpose(0, 2, 1)
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    turn = np.eye(3) + s * k + (1.0 - c) * k @ k           # Rodrigues
    out = rotations.matrix_to_euler(np.asarray(rotations.euler_to_matrix(angles)) @ turn)
    moved = shifts + rng.normal(0.0, shift_error / np.sqrt(2.0), shifts.shape)
    return np.asarray(out, float), moved


def write_dataset(folder: PathLike, table: Table, modes: NormalModes | None = None,
                  structure: Structure | None = None, pixel_size: float | None = None,
                  stack_name: str = "particles.mrcs", box: int | None = None) -> None:
    """Metadata next to an existing stack: particles.xmd (Xmipp names, image
    references ``N@particles.mrcs``), particles.star (RELION 3.1), and the modes
    (ContinuousFlex layout) and reference PDB when given."""
    from .nma import write_continuousflex
    from .structure import write_pdb
    t = table.copy()
    t["image"] = np.array([image_ref(i, stack_name) for i in t["itemId"]], dtype=object)
    cols = ["image"] + [c for c in t.columns if c != "image"]
    t = Table({c: t[c] for c in cols})
    t["enabled"] = np.ones(len(t), np.int64)
    write_xmd(os.path.join(folder, "particles.xmd"), t)
    write_star(os.path.join(folder, "particles.star"), t, pixel_size, image_size=box)
    if modes is not None:
        write_continuousflex(modes, folder)
    if structure is not None:
        write_pdb(os.path.join(folder, "reference.pdb"), structure)


def simulate_to_folder(folder: PathLike, structure: Structure, modes: NormalModes, n: int,
                       box: int = 128, pixel_size: float = 0.65, quiet: bool | None = None,
                       **kw: Any) -> Table:
    """Run :func:`simulate` and write folder/particles.mrcs (+ .xmd, .star,
    modes, reference.pdb). Resumes an interrupted run (same arguments)."""
    os.makedirs(folder, exist_ok=True)
    writer = StackWriter(os.path.join(folder, "particles.mrcs"), n, box, pixel_size)
    done_file = os.path.join(folder, ".simulate_done")
    start = int(open(done_file).read()) if os.path.exists(done_file) and os.path.exists(
        writer.part) else 0
    prog = Progress(n, "simulate", quiet=quiet)
    prog.n = start
    tables = []
    gen = simulate(structure.coords, structure.weights, modes.vectors, n, box, pixel_size,
                   progress=prog, start=start, **kw)
    for s, imgs, t in gen:
        if imgs is not None:
            writer.write(s, imgs)
            writer.flush()
            with open(done_file, "w") as f:
                f.write(str(s + len(imgs)))
        tables.append(t)
    writer.close()
    os.remove(done_file)
    table = Table.concatenate(tables)
    write_dataset(folder, table, modes, structure, pixel_size, box=box)
    return table
