"""HEMNMA: elastic + rigid-body alignment of particle images with normal modes.

Writes an .xmd with angleRot angleTilt anglePsi shiftX shiftY nmaDisplacements
cost (Xmipp/ContinuousFlex names), in input order. Work is done in chunks saved
under OUT.parts/: re-running the same command after an interruption continues
where it stopped. Unusable images (NaN/inf/constant) are skipped and listed in
OUT.rejected.xmd. Under torchrun, each process aligns every world_size-th chunk
and rank 0 merges.
"""
import os
import time

import numpy as np

from ..errors import InputError


def add_args(p):
    from ..core.config import AlignOptions
    d = AlignOptions()
    p.add_argument("--particles", required=True, help=".xmd/.star referencing the images")
    p.add_argument("--modes", required=True, help="modes folder / modes.xmd (ContinuousFlex)")
    p.add_argument("--structure", required=True, help="the reference the modes belong to")
    p.add_argument("--selection", default="heavy")
    p.add_argument("--mode-list", default="7-9")
    p.add_argument("--pixel-size", type=float, required=True, help="Å/px of the images")
    p.add_argument("--out", required=True, help="output .xmd")
    p.add_argument("--pyramid", default=None, help="e.g. 32,64 (default box/2,box)")
    p.add_argument("--angular-step", type=float, default=d.angular_step)
    p.add_argument("--search-amplitude", type=float, default=d.search_amplitude)
    p.add_argument("--max-shift", type=float, default=d.max_shift, help="Å, global search")
    p.add_argument("--candidates", type=int, default=d.n_candidates)
    p.add_argument("--coarse-iters", type=int, default=d.coarse_iters)
    p.add_argument("--fine-iters", type=int, default=d.fine_iters)
    p.add_argument("--images-flipped", action="store_true",
                   help="images are already CTF phase-flipped")
    p.add_argument("--no-ctf", action="store_true", help="ignore CTF columns")
    p.add_argument("--outlier-threshold", type=float, default=0,
                   help="also write OUT minus Mahalanobis outliers (paper: 3.2) as OUT_kept.xmd")
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--device", default="auto")


def _dist():
    import torch.distributed as dist
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None


def main(args):
    from ..core.align import AlignOptions, Aligner, check_images
    from ..core.ctf import CTFParams
    from ..core.nma import parse_mode_list, read_continuousflex
    from ..core.outliers import mahalanobis_filter
    from ..core.structure import read_structure
    from ..io.metadata import Table, read_metadata, write_xmd
    from ..io.stacks import load_images, open_stack
    from ..io.metadata import parse_image_ref
    from ..utils import Progress, resolve_device

    rank, world, dist = _dist()
    table = read_metadata(args.particles)
    table.require(["image"], "image", args.particles)
    if len(table) == 0:
        raise InputError(f"{args.particles}: no particles")
    root = os.path.dirname(os.path.abspath(args.particles))
    i0, p0 = parse_image_ref(table["image"][0])
    st = open_stack(p0 if os.path.isabs(p0) else os.path.join(root, p0))
    box = st.shape[-1]
    if st.pixel_size and abs(st.pixel_size - args.pixel_size) > 0.01 * args.pixel_size \
            and st.pixel_size != 1.0:
        raise InputError(f"{st.path}: header pixel size {st.pixel_size} Å differs from "
                         f"--pixel-size {args.pixel_size}")
    s, _ = read_structure(args.structure, args.selection).center()
    modes = read_continuousflex(args.modes, ref_coords=s.coords)
    wanted = parse_mode_list(args.mode_list)
    modes = modes.select(wanted)
    extent = np.linalg.norm(s.coords, axis=1).max()
    if 2 * extent > box * args.pixel_size * 1.5:
        raise InputError(f"the reference ({2 * extent:.0f} Å across) does not fit in the "
                         f"{box} px x {args.pixel_size} Å images: wrong pixel size?")
    device = resolve_device(args.device)
    if world > 1 and device.type == "cuda":
        import torch
        device = torch.device(f"cuda:{rank % torch.cuda.device_count()}")
    opt = AlignOptions(pyramid=tuple(int(x) for x in args.pyramid.split(",")) if args.pyramid
                       else None, angular_step=args.angular_step,
                       search_amplitude=args.search_amplitude, max_shift=args.max_shift,
                       n_candidates=args.candidates, coarse_iters=args.coarse_iters,
                       fine_iters=args.fine_iters, images_flipped=args.images_flipped,
                       device=str(device))
    aligner = Aligner(s.coords, s.weights, modes.vectors, box, args.pixel_size, opt)
    ctf_all = None if args.no_ctf else CTFParams.from_table(table)
    parts = args.out + ".parts"
    os.makedirs(parts, exist_ok=True)
    n = len(table)
    chunks = list(range(0, n, args.chunk))
    mine = [c for k, c in enumerate(chunks) if k % world == rank]
    todo = [c for c in mine if not os.path.exists(os.path.join(parts, f"{c:09d}.npz"))]
    prog = Progress(sum(min(args.chunk, n - c) for c in mine), f"align[{rank}]")
    prog.n = sum(min(args.chunk, n - c) for c in mine if c not in todo)
    t0 = time.perf_counter()
    for c in todo:
        idx = np.arange(c, min(n, c + args.chunk))
        imgs = load_images(table, root, idx)
        bad = check_images(imgs)
        good = np.setdiff1d(np.arange(len(idx)), bad)
        res = {"angles": np.full((len(idx), 3), np.nan), "shifts": np.full((len(idx), 2), np.nan),
               "amplitudes": np.full((len(idx), len(modes)), np.nan),
               "cost": np.full(len(idx), np.nan)}
        for b in range(0, len(good), opt.batch_size):
            sel = good[b:b + opt.batch_size]
            ctf = None if ctf_all is None else ctf_all.subset(idx[sel])
            r = aligner.align(imgs[sel], ctf)
            for k in res:
                res[k][sel] = r[k]
            prog.update(len(sel))
        prog.update(len(bad))
        tmp = os.path.join(parts, f".{c:09d}.tmp.npz")
        np.savez(tmp, bad=idx[bad], **res)
        os.replace(tmp, os.path.join(parts, f"{c:09d}.npz"))
    if dist is not None:
        dist.barrier()
    if rank != 0:
        return 0
    res = {k: [] for k in ("angles", "shifts", "amplitudes", "cost")}
    bad = []
    for c in chunks:
        z = np.load(os.path.join(parts, f"{c:09d}.npz"))
        for k in res:
            res[k].append(z[k])
        bad.extend(z["bad"].tolist())
    res = {k: np.concatenate(v) for k, v in res.items()}
    ok = np.ones(n, bool)
    ok[bad] = False
    out = table.copy()
    out["angleRot"], out["angleTilt"], out["anglePsi"] = res["angles"].T
    out["shiftX"], out["shiftY"] = res["shifts"].T
    out["nmaDisplacements"] = res["amplitudes"]
    out["cost"] = res["cost"]
    if "itemId" not in out:
        out["itemId"] = np.arange(1, n + 1)
    write_xmd(args.out, out.subset(ok))
    if bad:
        write_xmd(os.path.splitext(args.out)[0] + ".rejected.xmd", table.subset(np.array(bad)))
        print(f"skipped {len(bad)} unusable image(s) (NaN/inf/constant), listed in "
              f"{os.path.splitext(args.out)[0]}.rejected.xmd")
    dt = time.perf_counter() - t0
    print(f"aligned {ok.sum()} images in {dt:.1f} s -> {args.out}")
    if args.outlier_threshold > 0:
        keep, d = mahalanobis_filter(res["amplitudes"][ok], args.outlier_threshold)
        kept = out.subset(ok)
        kept["mahalanobis"] = d
        path = os.path.splitext(args.out)[0] + "_kept.xmd"
        write_xmd(path, kept.subset(keep))
        print(f"Mahalanobis <= {args.outlier_threshold}: kept {keep.sum()} of {ok.sum()} -> {path}")
    import shutil
    shutil.rmtree(parts)
    return 0
