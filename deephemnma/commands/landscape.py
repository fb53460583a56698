"""Conformational landscape: PCA of amplitudes, density plot, groups, animations.

OUT/pca.npz (the fitted projection, to place other particles: --pca),
OUT/landscape.xmd (particles with PC1, PC2, ... columns), OUT/density.png, and
with a grouping option OUT/group_NN.xmd subsets + OUT/groups.xmd (size and
centroid amplitudes per group); with --structure and --modes, OUT/axis_K.pdb
(.cxc, .vmd) animations of the reference along each principal axis and
OUT/centroid_NN.pdb models. With --class-column (the particles' discrete
classes, e.g. rlnClassNumber or ref), each class has its own colour in the
density plot and OUT/classes.tsv counts the particles per class and group
(--by-class: one group per class). Rows with non-finite amplitudes are left out and
listed in OUT/rejected.xmd. The group files' image references resolve from
OUT, wherever it is.

Examples:
  deephemnma landscape --particles predicted.xmd --out land --split 1:900 \\
      --structure AK.pdb --modes nma/
  deephemnma reconstruct --particles land/group_01.xmd --pixel-size 2.6 \\
      --out land/group_01.mrc
  deephemnma landscape --particles more.xmd --pca land/pca.npz --out land2 \\
      --select 'PC1 > 100 and PC2 < 0'
  deephemnma landscape --particles run_it025_data.star --out land --class-column \
      rlnClassNumber --kmeans 3
"""
from . import run_and_summarize
from ..stages import landscape as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--particles", required=True, help=".xmd/.star with nmaDisplacements")
    p.add_argument("--also", default=None,
                   help="second set to combine (e.g. HEMNMA-estimated training particles), "
                        "drawn apart in the density plot")
    p.add_argument("--also-label", default=d.also_label,
                   help="the second set's name in the density plot's legend")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--components", type=int, default=d.components,
                   help="PCA dimensions (at most the number of modes)")
    p.add_argument("--pca", default=None, help="place particles in an existing pca.npz")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--select", default=None, help="expression, e.g. 'PC1 > 100 and PC2 < 0'")
    g.add_argument("--rect", default=None, help="xmin,xmax,ymin,ymax on PC1, PC2")
    g.add_argument("--polygon", default=None, help="x1,y1,x2,y2,x3,y3,... on PC1, PC2")
    g.add_argument("--split", default=None,
                   help="AXIS:MIN_SIZE[:TRIM], e.g. 1:900:0.02 (equal-width groups along "
                        "axis 1, each >= 900 particles, 2%% of each tail left out)")
    g.add_argument("--kmeans", type=int, default=d.kmeans, help="k-means with K clusters")
    g.add_argument("--by-class", action="store_true",
                   help="one group per class of --class-column")
    p.add_argument("--class-column", default=None,
                   help="column of the particles' classes (e.g. rlnClassNumber, ref, classId; "
                        "at most %d distinct values): each class coloured in the density "
                        "plot, particles per class and group in classes.tsv"
                        % stage.MAX_CLASSES)
    p.add_argument("--min-group", type=int, default=d.min_group, help="refuse smaller groups")
    p.add_argument("--structure", default=None, help="reference PDB for animations")
    p.add_argument("--modes", default=None, help="its modes folder (ContinuousFlex layout)")
    p.add_argument("--selection", default=d.selection,
                   help="atoms of the reference that the modes move")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per animation")
    p.add_argument("--absolute-paths", action="store_true",
                   help="absolute image references in the outputs")


def config(args):
    return stage.Config(
        particles=args.particles, also=args.also, also_label=args.also_label, out=args.out,
        components=args.components, pca=args.pca, select=args.select,
        rect=None if args.rect is None else tuple(stage.parse_numbers(args.rect, "--rect")),
        polygon=None if args.polygon is None else tuple(stage.parse_numbers(args.polygon,
                                                                            "--polygon")),
        split=None if args.split is None else stage.parse_split(args.split),
        kmeans=args.kmeans, by_class=args.by_class or None, class_column=args.class_column,
        min_group=args.min_group, structure=args.structure,
        modes=args.modes, selection=args.selection, frames=args.frames,
        absolute_paths=args.absolute_paths)


def main(args):
    return run_and_summarize(stage, config(args))
