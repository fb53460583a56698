"""3D reconstruction of a group of particles from their Euler angles and shifts
(Fourier direct inversion, Wiener CTF correction when CTF columns exist).

--shift-scale multiplies the stored shifts: reconstruct from original-size
images with shifts estimated on downscaled ones (the paper: x2 from 128 to 256
px; --images gives the metadata of the original-size images). Rows with a
non-finite angle, shift or CTF value, or an unusable image, are left out and
listed in OUT.rejected.xmd. The pixel size is checked against the stacks'
headers.

Half maps (default; --no-half-maps turns them off): the particles are split in
two random halves fixed by particle id (itemId, else the row number), the same
in every run. Besides OUT.mrc: OUT_half1.mrc, OUT_half2.mrc, OUT_mask.mrc (a
soft mask: the map low-passed at 15 Å, thresholded at --mask-threshold times
its maximum, dilated by --mask-dilate px, a cosine edge --soft-edge px wide),
OUT_fsc_halves.json/.png (the FSC between the halves, unmasked and masked, the
masked one corrected for the mask by phase randomisation beyond the resolution
where the unmasked FSC drops below 0.8, or the mask's 15 Å if finer (Chen et
al. 2013); resolutions at
0.143 in Å) and OUT_filtered.mrc (the map low-pass filtered at the corrected
masked 0.143 resolution). None of this needs --reference.

Examples:
  deephemnma reconstruct --particles land/group_01.xmd --pixel-size 2.6 \\
      --out maps/group_01.mrc --reference maps/centroid_01.mrc
  deephemnma reconstruct --particles land/group_02.xmd --images full_size.xmd \\
      --shift-scale 2 --pixel-size 1.3 --out maps/group_02_full.mrc --flipped
"""
import argparse

from . import run_and_summarize
from ..stages import reconstruct as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--particles", required=True, help=".xmd/.star with angles and shifts")
    p.add_argument("--out", required=True, help="output map (.mrc)")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the images used")
    p.add_argument("--images", default=None,
                   help="another metadata whose image column is used (e.g. original size)")
    p.add_argument("--shift-scale", type=float, default=d.shift_scale)
    p.add_argument("--no-ctf", action="store_true", help="ignore CTF columns")
    p.add_argument("--flipped", action="store_true", help="images are phase-flipped")
    p.add_argument("--min-images", type=int, default=d.min_images)
    p.add_argument("--pad", type=float, default=d.pad,
                   help="Fourier oversampling (2: slightly better at Nyquist, much slower on CPU)")
    p.add_argument("--reference", default=None, help="map to compute the FSC against")
    add_half_map_args(p, d, "gold-standard half maps")
    p.add_argument("--device", default=d.device)


def config(args):
    return stage.Config(
        particles=args.particles, out=args.out, pixel_size=args.pixel_size, images=args.images,
        shift_scale=args.shift_scale, use_ctf=not args.no_ctf, flipped=args.flipped,
        min_images=args.min_images, pad=args.pad, reference=args.reference,
        device=args.device, **half_map_config(args))


def main(args):
    return run_and_summarize(stage, config(args))


def add_half_map_args(p, d, what):
    """The half-map options (``--half-maps``, the soft mask's) of a command
    whose stage config ``d`` has them; ``what`` names the half maps made."""
    p.add_argument("--half-maps", action=argparse.BooleanOptionalAction, default=d.half_maps,
                   help=f"{what}, their FSC, a soft mask and the map filtered at its "
                        "resolution (default: on)")
    p.add_argument("--mask-threshold", type=float, default=d.mask_threshold,
                   help="soft mask: threshold as a fraction of the low-passed map's maximum, "
                        "in (0, 1) (default %(default)s)")
    p.add_argument("--mask-dilate", type=float, default=d.mask_dilate,
                   help="soft mask: dilation in px (default %(default)s)")
    p.add_argument("--soft-edge", type=float, default=d.soft_edge,
                   help="soft mask: width of the cosine edge in px (default %(default)s)")


def half_map_config(args):
    """The half-map fields of a stage config, from :func:`add_half_map_args`'s options."""
    return dict(half_maps=args.half_maps, mask_threshold=args.mask_threshold,
                mask_dilate=args.mask_dilate, soft_edge=args.soft_edge)
