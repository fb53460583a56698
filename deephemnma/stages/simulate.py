"""Synthetic particle images with ground truth (the paper's data synthesis).

The reference (centred, :func:`deephemnma.stages.reference.load_reference`) is
deformed along the chosen normal modes with amplitudes from a law (the paper's
helix on modes 7-9, a uniform box or Gaussian clusters), oriented uniformly,
shifted by up to ``shift_range`` Å, projected as Gaussian atoms at
``render_factor`` times the output sampling, degraded by the CTF and noise and
downscaled (see :mod:`deephemnma.core.simulate` for the noise chain).

The default noise chain is the paper's (the command and the Scipion protocol
share it): the images are rendered at about 0.325 Å/px (256 px for 128 px
output images at 0.65 Å/px), the noise is added there at ``snr`` (0.1), and
the noisy images are downscaled (antialiased), which averages the noise (the
output images then have SNR ~0.4 at 0.65 Å/px, ~1.6 at 1.3 Å/px). The harder
variant, SNR ``snr`` in the output images themselves, is
``snr_at_render=False`` (``--snr-in-output``). The images are not phase-flipped
by default: align, train and predict flip them from the CTF columns, as the
paper's chain does (``phase_flip=True`` writes flipped images; then give
``--images-flipped`` to align, train and predict).

Outputs in the folder OUT: ``particles.mrcs`` (float32, the header carries
the pixel size), ``particles.xmd`` (ground truth in Xmipp names: angles,
shifts in output pixels, ``nmaDisplacements``, CTF), ``particles.star``
(RELION 3.1), ``modes.xmd`` + ``modes/vec.N`` and ``reference.pdb``; with a
consensus pose error (``consensus_angle`` degrees, ``consensus_shift`` Å, RMS
over the particles: ``--consensus-error DEG,Å``) also ``consensus.xmd``: the
same particles with poses that far off the true ones
(:func:`deephemnma.core.simulate.consensus_poses`) and no amplitudes, as a
consensus refinement would give them (e.g. to align them from their poses). A folder
that already holds particles is refused. An interrupted run (Ctrl-C, kill)
continues when the same command is run again; a partial stack left by a run
with other inputs or options is discarded (one line says so).
"""
from __future__ import annotations
import dataclasses
import json
import os
import sys
import time

import numpy as np

from . import base
from .base import need

__all__ = ["Config", "Outputs", "run", "summary", "noise_description", "LAWS"]

LAWS = ("helix", "uniform", "clusters")


@dataclasses.dataclass
class Config(base.StageConfig):
    structure: str = None            # reference PDB/mmCIF (e.g. AK.pdb)
    out: str = None                  # output folder
    n: int = 1000                    # number of images
    modes: str = None                # ContinuousFlex modes (default: computed, see reference)
    mode_list: str = "7-9"           # HEMNMA numbers of the modes deformed along
    selection: str = "heavy"         # atoms of the structure
    box: int = 128                   # output images, px (even)
    pixel_size: float = 0.65         # Å/px of the output images
    law: str = "helix"               # amplitude law: helix | uniform | clusters
    amplitude_scale: float = 200.0   # helix radius / uniform half-width
    noise: bool = True               # add noise at ``snr``
    snr: float = 0.1                 # signal variance / noise variance
    snr_at_render: bool = True       # the SNR holds at the rendering sampling, before
    #                                  downscaling (the paper's); False: in the output images
    ctf: bool = True
    defocus: float = 5000.0          # Å, positive = underfocus
    voltage: float = 200.0           # kV
    cs: float = 2.0                  # mm
    q0: float = 0.1                  # amplitude contrast
    shift_range: float = 1.625       # shifts U[-r, r], Å
    render_factor: int = None        # None: the factor bringing the sampling to the
    #                                  paper's 0.325 Å/px with snr_at_render, else 2
    phase_flip: bool = False         # phase-flip the output images (mark them flipped
    #                                  downstream: --images-flipped)
    sigma: float = 1.0               # atom Gaussian std, Å
    seed: int = 0
    consensus_angle: float = 0.0     # consensus.xmd: poses off by this RMS angle (deg)
    consensus_shift: float = 0.0     # ... and this RMS shift (Å); both 0: not written
    device: str = "cpu"

    def validate_options(self):
        """The numbers and choices (no file is looked at)."""
        from ..core.nma import parse_mode_list
        need(base.is_whole(self.n) and self.n >= 1,
             f"-n/--number must be an integer >= 1, got {self.n}")
        need(base.is_whole(self.box) and self.box >= 16 and self.box % 2 == 0,
             f"--box must be an even number of pixels >= 16, got {self.box}")
        base.positive("--pixel-size", self.pixel_size)
        need(self.law in LAWS, f"--law {self.law}: expected one of {', '.join(LAWS)}")
        wanted = parse_mode_list(self.mode_list)
        need(self.law != "helix" or len(wanted) == 3,
             f"--law helix needs exactly 3 modes (e.g. 7-9), --mode-list {self.mode_list} "
             f"has {len(wanted)}")
        base.at_least("--amplitude-scale", self.amplitude_scale, 0)
        if self.noise:
            base.positive("--snr", self.snr)
        if self.ctf:
            base.positive("--defocus", self.defocus)
            base.positive("--voltage", self.voltage)
            base.at_least("--cs", self.cs, 0)
            base.fraction("--q0", self.q0)
        base.at_least("--shift-range", self.shift_range, 0)
        if self.render_factor is not None:
            need(base.is_whole(self.render_factor) and self.render_factor >= 1,
                 f"--render-factor must be an integer >= 1, got {self.render_factor}")
        base.positive("--sigma", self.sigma)
        need(base.is_whole(self.seed) and self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
        base.at_least("--consensus-error angle", self.consensus_angle, 0)
        need(not self.consensus_angle > 180,
             f"--consensus-error angle must be <= 180 degrees, got {self.consensus_angle}")
        base.at_least("--consensus-error shift", self.consensus_shift, 0)
        return self

    def consensus(self):
        """Whether consensus.xmd is written (a consensus pose error is given)."""
        return self.consensus_angle > 0 or self.consensus_shift > 0

    def validate(self):
        base.existing("--structure", self.structure)
        if self.modes not in (None, ""):
            base.existing("--modes", self.modes, "path")
        inputs = [self.structure, self.modes, _modes_xmd(self.modes)]
        base.output_path("--out", self.out, inputs, folder=True)
        out = Outputs(self.out)
        for p in out.written():
            base.output_path("--out", p, inputs)
        need(not os.path.exists(out.particles),
             f"{self.out} already holds particles.xmd; choose another --out")
        return self.validate_options()

    def rendering(self):
        """The render factor used: as given, else the one bringing the output
        sampling to the paper's 0.325 Å/px with ``snr_at_render``, else 2."""
        from ..core.simulate import render_factor_for
        if self.render_factor is not None:
            return int(self.render_factor)
        return render_factor_for(self.pixel_size) if self.snr_at_render else 2

    def stamp(self):
        """The options that change the images (not the output folder or the device)."""
        d = self.to_dict()
        for k in ("out", "device", "structure", "modes", "consensus_angle", "consensus_shift"):
            d.pop(k)
        d["render_factor"] = self.rendering()
        return d


def _modes_xmd(modes):
    if modes in (None, "") or not os.path.isdir(modes):
        return None
    return os.path.join(modes, "modes.xmd")


@dataclasses.dataclass
class Outputs:
    folder: str
    n: int = 0
    mode_numbers: list = None
    amplitude_ranges: np.ndarray = None      # (M, 2) min, max per mode
    render_factor: int = None
    restarted: bool = False                  # a partial stack of another run was discarded
    seconds: float = 0.0

    def _p(self, *name):
        return os.path.join(self.folder, *name)

    @property
    def stack(self):
        return self._p("particles.mrcs")

    @property
    def particles(self):
        """Ground truth (Xmipp names), image references ``N@particles.mrcs``."""
        return self._p("particles.xmd")

    @property
    def consensus(self):
        """The particles with consensus poses (when a consensus pose error is given)."""
        return self._p("consensus.xmd")

    @property
    def star(self):
        return self._p("particles.star")

    @property
    def modes_xmd(self):
        return self._p("modes.xmd")

    @property
    def modes_dir(self):
        return self._p("modes")

    @property
    def reference(self):
        return self._p("reference.pdb")

    @property
    def stamp(self):
        """The options of an unfinished run (removed when it completes)."""
        return self._p(".simulate_stamp.json")

    def written(self):
        return [self.stack, self.particles, self.star, self.modes_xmd, self.reference,
                self.consensus]

    def all_paths(self):
        """Everything a run may create (for clean-up after an error)."""
        return self.written() + [self.stack + ".part", self._p(".simulate_done"), self.stamp,
                                 self.modes_dir, self._p("reference_coords.txt")]

    run_record = base.record_property("folder", folder=True)


def _identity(cfg, s, modes):
    return {"options": cfg.stamp(), "structure": base.file_digest(cfg.structure),
            "coords": base.array_digest(s.coords), "modes": [int(n) for n in modes.numbers],
            "vectors": base.array_digest(modes.vectors)}


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@base.recorded(lambda cfg: Outputs(cfg.out))
def run(cfg: Config, progress: bool = True) -> Outputs:
    """Simulate ``cfg.n`` images into ``cfg.out``; returns :class:`Outputs`."""
    from ..core.simulate import simulate_to_folder
    from ..utils import atomic_path
    from .reference import check_fits, load_reference
    cfg.validate()
    out = Outputs(cfg.out, render_factor=cfg.rendering())
    s, modes = load_reference(cfg.structure, cfg.selection, cfg.modes, cfg.mode_list)
    check_fits(s, cfg.box, cfg.pixel_size)
    identity = json.loads(json.dumps(_identity(cfg, s, modes), sort_keys=True))
    part, done = out.stack + ".part", out._p(".simulate_done")
    if os.path.exists(part) and _read_json(out.stamp) != identity:
        base.say(f"simulate: {part} was written by a run with other inputs or options; "
                 "starting afresh", sys.stderr)
        for p in (part, done):
            if os.path.exists(p):
                os.remove(p)
        out.restarted = True
    t0 = time.perf_counter()
    with base.cleanup_on_error(cfg.out, *out.all_paths()):
        with atomic_path(out.stamp) as tmp, open(tmp, "w") as f:
            json.dump(identity, f, sort_keys=True)
        table = simulate_to_folder(
            cfg.out, s, modes, cfg.n, box=cfg.box, pixel_size=cfg.pixel_size,
            quiet=None if progress else True, amplitudes=cfg.law,
            amplitude_scale=cfg.amplitude_scale, snr=cfg.snr if cfg.noise else None,
            ctf=cfg.ctf, defocus=cfg.defocus, voltage=cfg.voltage, cs=cfg.cs, q0=cfg.q0,
            shift_range=cfg.shift_range, render_factor=out.render_factor,
            phase_flip=cfg.phase_flip, sigma=cfg.sigma, seed=cfg.seed, device=cfg.device,
            snr_at_render=cfg.snr_at_render)
        if cfg.consensus():
            _write_consensus(out, cfg)
    os.remove(out.stamp)
    out.seconds = time.perf_counter() - t0
    q = table["nmaDisplacements"]
    out.n = len(table)
    out.mode_numbers = [int(n) for n in modes.numbers]
    out.amplitude_ranges = np.column_stack([q.min(0), q.max(0)])
    return out


def _write_consensus(out, cfg):
    """consensus.xmd: particles.xmd with poses off by the consensus pose error
    (a random stream of its own, from the seed) and no amplitudes: what a
    consensus refinement gives."""
    from ..core.simulate import consensus_poses
    from ..io.metadata import read_metadata, write_xmd
    t = read_metadata(out.particles)
    ang, sh = consensus_poses(t.angles(), t.shifts(), cfg.consensus_angle,
                              cfg.consensus_shift / cfg.pixel_size, rng=[cfg.seed, 1])
    t["angleRot"], t["angleTilt"], t["anglePsi"] = ang[:, 0], ang[:, 1], ang[:, 2]
    t["shiftX"], t["shiftY"] = sh[:, 0], sh[:, 1]
    if "nmaDisplacements" in t:
        del t["nmaDisplacements"]
    write_xmd(out.consensus, t)


def noise_description(cfg, render_factor=None):
    """One line on the noise chain of ``cfg`` (the paper's or the harder one)."""
    if not cfg.noise:
        return "no noise"
    rf = render_factor or cfg.rendering()
    if cfg.snr_at_render and rf > 1:
        return (f"SNR {cfg.snr:g} at {cfg.pixel_size / rf:.3g} Å/px ({cfg.box * rf} px) before "
                f"downscaling, the paper's chain (~{cfg.snr * rf * rf:.2g} in the output images)")
    return f"SNR {cfg.snr:g} in the output images"


def summary(out: Outputs, cfg: Config) -> list[str]:
    lines = [f"{out.n} images {cfg.box}x{cfg.box} px at {cfg.pixel_size} Å/px (rendered at "
             f"{out.render_factor}x) in {out.seconds:.1f} s "
             f"({out.n / max(out.seconds, 1e-9):.0f} images/s) -> {out.particles}",
             f"modes {out.mode_numbers}; amplitude ranges: "
             + ", ".join(f"[{a:.0f}, {b:.0f}]" for a, b in out.amplitude_ranges),
             f"noise: {noise_description(cfg, out.render_factor)}; CTF "
             + (f"{cfg.defocus:g} Å underfocus" if cfg.ctf else "none")]
    if cfg.consensus():
        lines.append(f"consensus poses ({cfg.consensus_angle:g}° RMS rotation, "
                     f"{cfg.consensus_shift:g} Å RMS shift off the truth) -> {out.consensus}")
    if cfg.phase_flip and cfg.ctf:
        lines.append("the images are phase-flipped: give --images-flipped to align, train and "
                     "predict")
    return lines
