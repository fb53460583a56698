"""A series of maps along a principal axis or a drawn path, to play in ChimeraX.

--frames positions are evenly spaced along --axis K (PC K) or --path (points
"x1,y1;x2,y2;..." on PC1, PC2, or a file of them with one point per line,
e.g. the landscape viewer's drawn path.txt; write --path="-40,0;..." when
the first number is negative); each frame's map is
reconstructed, with its half maps, from the --window particles nearest to its
position along the path (a number, or a fraction of the particles when below
1; on a path, of those within --band of it). The particles: a landscape
folder (--landscape: its landscape.xmd), or --particles with PC columns or
amplitudes (placed by --pca, else by a PCA fitted on them).

OUT/frame_NNN.mrc (NNN from 001) with OUT/frame_NNN_half1.mrc, _half2,
_mask, _filtered and _fsc_halves.json/.png, the window's particles
OUT/frame_NNN.xmd, OUT/series.tsv (frame, position, mean position,
particles, mean PC coordinates, half-map resolution), OUT/series.cxc
(ChimeraX: opens the frames as a volume series and plays it), OUT/path.txt
(the path used) and, with --structure and --modes, OUT/centroids.pdb (the
centroid model of each window: its mean amplitudes deforming the reference)
with .cxc and .vmd scripts.

Examples:
  deephemnma series --landscape land --axis 1 --frames 10 --window 300 \\
      --pixel-size 2.6 --out land/series_pc1 --structure AK.pdb --modes nma/
  deephemnma series --landscape land --path="-40,0;0,20;40,0" --band 15 \\
      --window 0.2 --pixel-size 2.6 --out land/series_path
  chimerax land/series_pc1/series.cxc
"""
import argparse

from . import run_and_summarize
from .reconstruct import add_half_map_args, half_map_config
from ..stages import series as stage


def _window(text):
    """--window: a number of particles or a fraction (checked by the stage)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of particles or a fraction, "
                                         f"got {text!r}") from None
    return int(v) if v >= 1 and v == int(v) else v


def add_args(p):
    d = stage.Config()
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--landscape", default=None,
                     help="a landscape folder (the landscape command's --out)")
    src.add_argument("--particles", default=None,
                     help=".xmd/.star with PC1, PC2... columns or normal-mode amplitudes")
    p.add_argument("--pca", default=None,
                   help="with --particles: place their amplitudes in this pca.npz (else a "
                        "PCA is fitted on them)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--axis", type=int, default=None, help="along principal axis K (1: PC1)")
    how.add_argument("--path", default=None,
                     help="along a path: points 'x1,y1;x2,y2;...' on PC1, PC2, or a file of "
                          "points (one 'x y' per line); --path=\"-4,0;...\" when the first "
                          "number is negative")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--frames", type=int, default=d.frames, help="maps in the series")
    p.add_argument("--window", type=_window, default=d.window,
                   help="particles per window, or a fraction of the particles when below 1")
    p.add_argument("--band", type=float, default=None,
                   help="with --path: leave out particles farther than this from the path "
                        "(PC units)")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the images")
    p.add_argument("--no-ctf", action="store_true", help="ignore CTF columns")
    p.add_argument("--flipped", action="store_true", help="images are phase-flipped")
    p.add_argument("--min-images", type=int, default=d.min_images,
                   help="refuse windows with fewer particles")
    add_half_map_args(p, d, "half maps of each frame")
    p.add_argument("--structure", default=None,
                   help="reference PDB for the centroid model of each window")
    p.add_argument("--modes", default=None, help="its modes folder (ContinuousFlex layout)")
    p.add_argument("--selection", default=d.selection,
                   help="atoms of the reference that the modes move")
    p.add_argument("--device", default=d.device)


def config(args):
    return stage.Config(
        landscape=args.landscape, particles=args.particles, pca=args.pca, out=args.out,
        axis=args.axis, path=args.path, frames=args.frames, window=args.window,
        band=args.band, pixel_size=args.pixel_size, flipped=args.flipped,
        use_ctf=not args.no_ctf, min_images=args.min_images, structure=args.structure,
        modes=args.modes, selection=args.selection, device=args.device,
        **half_map_config(args))


def main(args):
    return run_and_summarize(stage, config(args))
