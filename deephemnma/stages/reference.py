"""The reference and its normal modes, as every stage loads them (one place).

The reference is centred on the centroid of its atoms (where every deephemnma
projection puts it; normal modes do not move the centroid). Modes are picked by
their HEMNMA numbers (``7-9``); amplitudes without numbers belong to the first
flexible modes (:func:`deephemnma.core.nma.flexible_numbers`).
"""
import numpy as np

from ..errors import InputError

__all__ = ["load_reference", "check_fits", "DEFAULT_NMA"]

# modes computed on the fly when none are given: RTB with one residue per
# block (ANM for pseudoatoms), 8 Å cutoff, 20 modes (the nma stage's defaults)
DEFAULT_NMA = dict(n_modes=20, cutoff=8.0, block_size=1)


def load_reference(structure_path, selection="heavy", modes_path=None, mode_list="7-9",
                   n_modes=None):
    """(centred Structure, NormalModes restricted to ``mode_list``).

    ``mode_list``: HEMNMA numbers ('7-9', [7, 8, 9]) or an int k (the first k
    flexible modes). Without ``modes_path`` the modes are computed
    (:data:`DEFAULT_NMA`)."""
    from ..core.nma import compute_modes, flexible_numbers, parse_mode_list, read_continuousflex
    from ..core.structure import read_structure
    s, _ = read_structure(structure_path, selection).center()
    if modes_path:
        modes = read_continuousflex(modes_path, ref_coords=s.coords)
    else:
        want = parse_mode_list(mode_list) if not isinstance(mode_list, int) else []
        n = max([n_modes or DEFAULT_NMA["n_modes"]] + want)
        modes = compute_modes(s, n_modes=n, cutoff=DEFAULT_NMA["cutoff"],
                              method="anm" if s.is_pseudoatomic else "rtb",
                              block_size=DEFAULT_NMA["block_size"])
    if isinstance(mode_list, (int, np.integer)):
        wanted = flexible_numbers(modes.numbers, int(mode_list), modes_path or structure_path)
    else:
        wanted = parse_mode_list(mode_list)
    return s, modes.select(wanted)


def check_fits(structure, box, pixel_size):
    """The reference fits in the images (else the pixel size is likely wrong)."""
    extent = 2 * np.linalg.norm(structure.coords, axis=1).max()
    if extent > box * pixel_size * 1.5:
        raise InputError(f"the reference ({extent:.0f} Å across) does not fit in the "
                         f"{box} px x {pixel_size} Å images: wrong pixel size?")
