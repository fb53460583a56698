"""Conformational landscape: PCA of amplitudes, density plot, groups, animations.

OUT/pca.npz (the fitted projection, to place new particles), OUT/landscape.xmd
(particles with PC1, PC2, ... columns), OUT/density.png, and with a grouping
option OUT/group_NN.xmd subsets + OUT/groups.xmd (size and centroid amplitudes
per group) + centroid models; with --structure/--modes, OUT/axis_K.pdb/.cxc/.vmd
animations of the reference along each principal axis.
"""
import os

import numpy as np

from ..errors import InputError


def add_args(p):
    p.add_argument("--particles", required=True, help=".xmd with nmaDisplacements")
    p.add_argument("--also", default=None,
                   help="second set to combine (e.g. HEMNMA-estimated training particles)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--components", type=int, default=2)
    p.add_argument("--pca", default=None, help="place particles in an existing pca.npz")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--select", default=None, help="expression, e.g. 'PC1 > 100 and PC2 < 0'")
    g.add_argument("--rect", default=None, help="xmin,xmax,ymin,ymax on PC1, PC2")
    g.add_argument("--polygon", default=None, help="x1,y1,x2,y2,... on PC1, PC2")
    g.add_argument("--split", default=None, help="AXIS:MIN_SIZE[:TRIM], e.g. 1:900:0.02")
    g.add_argument("--kmeans", type=int, default=None)
    p.add_argument("--min-group", type=int, default=10, help="refuse smaller groups")
    p.add_argument("--structure", default=None, help="reference PDB for animations")
    p.add_argument("--modes", default=None, help="modes folder for animations")
    p.add_argument("--frames", type=int, default=10)


def main(args):
    from ..core import landscape as L
    from ..io.metadata import Table, read_metadata, write_xmd
    t = read_metadata(args.particles)
    t.require(["nmaDisplacements"], "normal-mode amplitude", args.particles)
    t["source"] = np.full(len(t), os.path.basename(args.particles), dtype=object)
    if args.also:
        t2 = read_metadata(args.also)
        t2.require(["nmaDisplacements"], "normal-mode amplitude", args.also)
        t2["source"] = np.full(len(t2), os.path.basename(args.also), dtype=object)
        if t2["nmaDisplacements"].shape[1] != t["nmaDisplacements"].shape[1]:
            raise InputError("the two sets have different numbers of modes")
        t = Table.concatenate([t, t2])
    q = t["nmaDisplacements"]
    os.makedirs(args.out, exist_ok=True)
    pca = L.load_pca(args.pca) if args.pca else L.fit_pca(q, args.components)
    c = L.transform(pca, q)
    for i in range(c.shape[1]):
        t[f"PC{i + 1}"] = c[:, i]
    labels = None
    if args.select:
        labels = np.where(L.select_expression(c, args.select), 0, -1)
    elif args.rect:
        v = [float(x) for x in args.rect.split(",")]
        labels = np.where(L.select_rectangle(c, *v), 0, -1)
    elif args.polygon:
        v = np.array([float(x) for x in args.polygon.split(",")]).reshape(-1, 2)
        labels = np.where(L.select_polygon(c, v), 0, -1)
    elif args.split:
        parts = args.split.split(":")
        axis = int(parts[0]) - 1
        if not 0 <= axis < c.shape[1]:
            raise InputError(f"--split axis {axis + 1}: only PC1..PC{c.shape[1]} exist")
        labels = L.split_axis(c, axis, int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.02)
    elif args.kmeans:
        labels = L.kmeans_groups(c, args.kmeans)
    if not args.pca:
        L.save_pca(pca, os.path.join(args.out, "pca.npz"))
    write_xmd(os.path.join(args.out, "landscape.xmd"), t)
    L.density_plot(c, os.path.join(args.out, "density.png"), labels)
    ev = pca["explained_variance_ratio"]
    print(f"PCA of {len(t)} images x {q.shape[1]} modes: explained variance "
          + ", ".join(f"PC{i + 1} {100 * v:.1f}%" for i, v in enumerate(ev)))
    s = modes = None
    if args.structure and args.modes:
        from ..commands.simulate import load_reference
        s, modes = load_reference(args.structure, modes_path=args.modes,
                                  mode_list=",".join(str(int(m)) for m in
                                                     _flex_numbers(args.modes, q.shape[1])))
        for ax in range(c.shape[1]):
            amps = L.axis_trajectory(pca, c, ax, args.frames)
            L.write_animation(os.path.join(args.out, f"axis_{ax + 1}"), s, modes.deform(amps))
        print(f"animations along {c.shape[1]} axes -> {args.out}/axis_K.pdb (.cxc, .vmd)")
    if labels is not None:
        groups = sorted(set(labels[labels >= 0].tolist()))
        if not groups:
            raise InputError("the selection contains no image")
        rows = []
        for g in groups:
            m = labels == g
            if m.sum() < args.min_group:
                raise InputError(f"group {g + 1} has {m.sum()} images, fewer than "
                                 f"--min-group {args.min_group}")
            sub = t.subset(m)
            write_xmd(os.path.join(args.out, f"group_{g + 1:02d}.xmd"), sub)
            cen = sub["nmaDisplacements"].mean(0)
            rows.append((g + 1, int(m.sum()), cen))
            if s is not None:
                from ..core.structure import write_pdb
                write_pdb(os.path.join(args.out, f"centroid_{g + 1:02d}.pdb"), s,
                          modes.deform(cen[None])[0])
        write_xmd(os.path.join(args.out, "groups.xmd"), Table({
            "ref": np.array([r[0] for r in rows]), "classCount": np.array([r[1] for r in rows]),
            "nmaDisplacements": np.array([r[2] for r in rows])}))
        print("groups: " + ", ".join(f"{r[0]}: {r[1]} images" for r in rows))


def _flex_numbers(modes_path, k):
    from ..core.nma import read_continuousflex
    nums = [int(n) for n in read_continuousflex(modes_path).numbers if n > 6]
    if len(nums) < k:
        raise InputError(f"{modes_path}: {len(nums)} flexible modes, particles have {k}")
    return nums[:k]
