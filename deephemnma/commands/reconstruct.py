"""3D reconstruction of a group of particles from their Euler angles and shifts
(Fourier direct inversion, Wiener CTF correction when CTF columns exist).

--shift-scale multiplies the stored shifts: reconstruct from original-size
images with shifts estimated on downscaled ones (the paper: x2 from 128 to 256 px).
"""
import numpy as np

from ..errors import InputError


def add_args(p):
    p.add_argument("--particles", required=True, help=".xmd/.star with angles and shifts")
    p.add_argument("--out", required=True, help="output map (.mrc)")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the images used")
    p.add_argument("--images", default=None,
                   help="another metadata whose image column is used (e.g. original size)")
    p.add_argument("--shift-scale", type=float, default=1.0)
    p.add_argument("--no-ctf", action="store_true")
    p.add_argument("--flipped", action="store_true", help="images are phase-flipped")
    p.add_argument("--min-images", type=int, default=50)
    p.add_argument("--pad", type=float, default=1.0,
                   help="Fourier oversampling (2: slightly better at Nyquist, much slower on CPU)")
    p.add_argument("--reference", default=None, help="map to compute the FSC against")
    p.add_argument("--device", default="auto")


def main(args):
    import os
    from ..core.ctf import CTFParams
    from ..core.reconstruct import fsc_resolution, reconstruct
    from ..io.metadata import read_metadata
    from ..io.stacks import load_images, read_volume, write_volume
    from ..utils import Progress, resolve_device
    t = read_metadata(args.particles)
    t.require(["angleRot", "angleTilt", "anglePsi"], "Euler angle", args.particles)
    if len(t) < args.min_images:
        raise InputError(f"{args.particles}: {len(t)} images, fewer than --min-images "
                         f"{args.min_images} for a reconstruction")
    src = read_metadata(args.images) if args.images else t
    root = os.path.dirname(os.path.abspath(args.images or args.particles))
    if args.images:
        from ..core.metrics import match_rows
        ie, isrc = match_rows(t, src)
        t, src = t.subset(ie), src.subset(isrc)
    imgs = load_images(src, root)
    ctf = None if args.no_ctf else CTFParams.from_table(t)
    prog = Progress(len(t), "reconstruct")
    vol = reconstruct(imgs, t.angles(), t.shifts() * args.shift_scale, ctf, args.pixel_size,
                      pad=args.pad, flipped=args.flipped, device=str(resolve_device(args.device)),
                      progress=prog)
    write_volume(args.out, vol, args.pixel_size)
    print(f"reconstructed {len(t)} images -> {args.out}")
    if args.reference:
        ref, _ = read_volume(args.reference)
        r = fsc_resolution(vol, ref, args.pixel_size)
        print(f"FSC vs {args.reference}: {r['res_0.5']:.2f} Å at 0.5, "
              f"{r['res_0.143']:.2f} Å at 0.143")
