"""Fourier shell correlation between two maps: resolution at 0.5 and 0.143 and a PNG curve.

The maps must have the same cubic shape (and voxel size, when both headers
have one).

Example:
  deephemnma fsc land/group_01.mrc land/centroid_01.mrc --png land/fsc_01.png \\
      --json land/fsc_01.json
"""
from . import run_and_summarize
from ..stages import fsc as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("map1")
    p.add_argument("map2")
    p.add_argument("--pixel-size", type=float, default=d.pixel_size,
                   help="Å/voxel (default: from the header)")
    p.add_argument("--png", default=d.png, help="write the FSC curve here")
    p.add_argument("--json", default=d.json, help="write the resolutions and curve here")


def config(args):
    return stage.Config(map1=args.map1, map2=args.map2, pixel_size=args.pixel_size,
                        png=args.png, json=args.json)


def main(args):
    return run_and_summarize(stage, config(args))
