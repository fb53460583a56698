"""The paper's synthetic AK protocol, shared by the benchmarks.

The paper renders 256 px images at 0.325 Å/px, applies the CTF (200 kV, Cs
2 mm, 5000 Å underfocus) and noise at SNR 0.1 *at that size*, phase-flips and
downscales them (antialiased) to 128 px at 0.65 Å/px. Downscaling averages the
noise, so the SNR of the images the methods see is ~0.4 at 128 px and ~1.6 at
64 px (1.3 Å/px). ``noise="paper"`` reproduces that chain for any output box
(same field of view, 83 Å); ``noise="output"`` puts SNR 0.1 in the output
images themselves (16x harder at 64 px than the paper's chain).
"""
import numpy as np


def pixel_size_for(box):
    """Å/px keeping the paper's field of view (128 px at 0.65 Å/px)."""
    return 1.3 * 64 / box


def synthetic(structure, modes, n, box, seed, noise="paper", **kw):
    """(images (n, box, box) phase-flipped, ground-truth Table, pixel size)."""
    from deephemnma.core.simulate import render_factor_for, simulate
    from deephemnma.io.metadata import Table
    ps = pixel_size_for(box)
    if noise == "paper":
        kw.update(render_factor=render_factor_for(ps), snr_at_render=True)
    elif noise != "output":
        raise ValueError(f"noise must be 'paper' or 'output', got {noise!r}")
    ch = list(simulate(structure.coords, structure.weights, modes.vectors, n, box=box,
                       pixel_size=ps, snr=0.1, seed=seed, phase_flip=True, **kw))
    return (np.concatenate([c[1] for c in ch]), Table.concatenate([c[2] for c in ch]), ps)


def noise_label(noise, box):
    if noise == "paper":
        return (f"SNR 0.1 at 256 px / 0.325 Å (the paper's chain), downscaled to {box} px "
                f"(effective SNR ~{0.1 * (256 / box) ** 2:.1f})")
    return f"SNR 0.1 in the {box} px images (harder than the paper)"
