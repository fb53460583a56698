"""The paper's Fig. 7 comparison: maps of ten groups along PC1 from
ground-truth, HEMNMA and network poses.

What it is (the paper's Results, Fig. 7 and Supplementary Fig. 3): a large
test set (``--n`` images, paper 50,000) is simulated at the reconstruction
size (``--recon-box``, paper 256 px at 0.325 Å/px) with the paper's chain and
Fourier-downscaled to the pose size (``--box``, paper 128 px); the network
(``--model``, trained at --box: e.g. bench_network.py --work W ->
W/net/model.pt) predicts amplitudes, angles and shifts; the first principal
axis of the predicted amplitudes is split into ``--groups`` (10) equal-width
groups (2 % trimmed at each end); from each group, a subgroup of the smallest
group's size (paper 899; ``--subgroup``) is reconstructed from the
reconstruction-size images (shifts x recon-box/box, CTF Wiener, the images not
phase-flipped) with ground-truth poses, our HEMNMA's poses (the align stage on
the pose-size images), the network's poses, and the network's poses refined
by local HEMNMA (the refine stage); the whole group with the
network's poses (Fig. 7 itself). FSC 0.5 and 0.143 against the map of the
atomic model at the group's ground-truth centroid amplitudes.

CPU default (minutes): 1,500 images, poses at 64 px (1.3 Å/px), maps at
128 px (0.65 Å/px), subgroups of 40 images; without --model a quick model is
trained on ground-truth labels first (labelled so). The paper's scale (GPU):

    python benchmarks/bench_fig7.py --model net/model.pt --n 50000 --box 128 \\
        --recon-box 256 --subgroup 899 --device cuda
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

import paper


def run(model, n=1500, box=64, recon_box=128, groups=10, subgroup=40, hemnma=True,
        device="cpu", work=None, seed=7, progress=print, align_options=None, whole=True,
        refine=True):
    """The comparison; -> dict with one row per group and the ranges
    (``whole``: also the map of each whole group from the network's poses)."""
    from deephemnma.core import rotations as R
    from deephemnma.io.stacks import open_stack
    work = work or tempfile.mkdtemp(prefix="bench_fig7_")
    ref = paper.reference()
    ps_r = paper.pixel_size_for(recon_box)
    ps = paper.pixel_size_for(box)
    t0 = time.perf_counter()
    paper.simulate_set(os.path.join(work, "big"), n, recon_box, seed, ref, device=device)
    small, k = paper.downscale_set(os.path.join(work, "big"), os.path.join(work, "small"), box,
                                   device)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred, _ = paper.predict(model, os.path.join(work, "small", "particles.xmd"),
                            os.path.join(work, "pred.xmd"), device, batch_size=256)
    t_pred = time.perf_counter() - t0
    order = np.argsort(pred["itemId"])
    pred = pred.subset(order)
    assert np.array_equal(pred["itemId"], small["itemId"])
    labels, pc1 = paper.pc1_groups(pred["nmaDisplacements"], groups)
    sizes = np.bincount(labels[labels >= 0], minlength=groups)
    m = int(min(subgroup or sizes.min(), sizes.min()))
    rng = np.random.default_rng(seed)
    sub = {g: np.sort(rng.choice(np.nonzero(labels == g)[0], m, replace=False))
           for g in range(groups)}
    poses = {"ground truth": (small.angles(), small.shifts()),
             "network": (pred.angles(), pred.shifts())}
    rows = np.sort(np.concatenate(list(sub.values())))      # the subgroups' rows

    def at_rows(est):
        """Poses of ``est`` (a Table of the subgroups' rows, any order) placed
        at their rows of ``small`` (NaN elsewhere)."""
        pos = {int(i): j for j, i in enumerate(est["itemId"])}
        idx = np.array([pos[int(i)] for i in small["itemId"][rows]])
        ang = np.full((len(small), 3), np.nan)
        sh = np.full((len(small), 2), np.nan)
        ang[rows], sh[rows] = est.angles()[idx], est.shifts()[idx]
        return ang, sh

    t_hem = 0.0
    if hemnma:
        paper.write_rows(small.subset(rows), os.path.join(work, "sub.xmd"))
        al, _, t_hem = paper.hemnma(os.path.join(work, "sub.xmd"), os.path.join(work, "big"),
                                    os.path.join(work, "hemnma.xmd"), ps, device,
                                    **(align_options or {}))
        poses["HEMNMA"] = at_rows(al)
    t_ref = 0.0
    if refine:        # the network's poses refined by local HEMNMA (refine stage)
        from deephemnma.io.metadata import read_metadata
        from deephemnma.stages import refine as refine_stage
        paper.write_rows(pred.subset(rows), os.path.join(work, "pred_sub.xmd"))
        data = os.path.join(work, "big")
        t0 = time.perf_counter()
        res = refine_stage.run(refine_stage.Config(
            particles=os.path.join(work, "pred_sub.xmd"), modes=data,
            structure=os.path.join(data, "reference.pdb"), out=os.path.join(work, "refined.xmd"),
            pixel_size=ps, device=device, outlier_threshold=0, **(align_options or {})),
            progress=False)
        t_ref = time.perf_counter() - t0
        poses["network refined by HEMNMA"] = at_rows(read_metadata(res.particles))
    big = open_stack(os.path.join(work, "big", "particles.mrcs"))
    q = small["nmaDisplacements"]
    gt_rot = R.euler_to_matrix(small.angles())
    out = []
    for g in range(groups):
        rows = sub[g]
        refmap = paper.centroid_map(q[rows], recon_box, ps_r, ref, device)
        res = paper.group_fsc(big, small, rows, poses, k, ps_r, refmap, device)
        full = np.nonzero(labels == g)[0]
        if whole:
            fullmap = paper.centroid_map(q[full], recon_box, ps_r, ref, device)
            res["network, whole group"] = paper.group_fsc(
                big, small, full, {"network": poses["network"]}, k, ps_r, fullmap,
                device)["network"]
        errs = {name: float(R.angular_distance(R.euler_to_matrix(a[rows]), gt_rot[rows]).mean())
                for name, (a, _) in poses.items() if name != "ground truth"}
        row = {"group": g + 1, "pc1": [float(pc1[full].min()), float(pc1[full].max())],
               "images": int(len(full)), "subgroup": m, "fsc": res, "angular_error_deg": errs}
        out.append(row)
        if progress:
            progress(f"group {g + 1}: {len(full)} images; " + ", ".join(
                f"{name} {v['fsc_0.5']:.2f}/{v['fsc_0.143']:.2f} Å" for name, v in res.items()))
    names = list(out[0]["fsc"])
    ranges = {name: {t: [min(r["fsc"][name][t] for r in out), max(r["fsc"][name][t] for r in out)]
                     for t in ("fsc_0.5", "fsc_0.143")} for name in names}
    return {"groups": out, "ranges": ranges, "n": n, "box": box, "recon_box": recon_box,
            "pixel_size": ps, "recon_pixel_size": ps_r, "subgroup": m,
            "seconds": {"simulate": t_sim, "predict": t_pred, "hemnma": t_hem, "refine": t_ref},
            "nyquist_A": 2 * ps_r, "work": work}


def markdown(r, model_note=""):
    names = list(r["groups"][0]["fsc"])
    lines = [f"## Fig. 7: ten groups along PC1 of the network's amplitudes; poses at {r['box']} "
             f"px ({r['pixel_size']:.3g} Å/px), maps from the {r['recon_box']} px images "
             f"({r['recon_pixel_size']:.3g} Å/px, Nyquist {r['nyquist_A']:.2f} Å); subgroups of "
             f"{r['subgroup']} images; FSC 0.5 / 0.143 (Å) against each group's ground-truth "
             f"centroid map{model_note}\n",
             "| group | images | " + " | ".join(names) + " | mean angular error deg |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for g in r["groups"]:
        cells = [f"{g['fsc'][n]['fsc_0.5']:.2f} / {g['fsc'][n]['fsc_0.143']:.2f}" for n in names]
        errs = ", ".join(f"{k} {v:.1f}" for k, v in g["angular_error_deg"].items())
        lines.append(f"| {g['group']} | {g['images']} | " + " | ".join(cells) + f" | {errs} |")
    lines += ["", "| poses | FSC 0.5 range Å | FSC 0.143 range Å | paper FSC 0.5 | "
                  "paper FSC 0.143 |", "|---|---|---|---|---|"]
    sub = paper.FIG7["subgroups"]
    for n in names:
        p = sub.get(n) or (paper.FIG7["full groups, inferred poses"]
                           if n == "network, whole group" else None)
        rr = r["ranges"][n]
        lines.append(f"| {n} | {rr['fsc_0.5'][0]:.2f}-{rr['fsc_0.5'][1]:.2f} | "
                     f"{rr['fsc_0.143'][0]:.2f}-{rr['fsc_0.143'][1]:.2f} | "
                     + (f"{p['fsc_0.5'][0]}-{p['fsc_0.5'][1]} | "
                        f"{p['fsc_0.143'][0]}-{p['fsc_0.143'][1]} |" if p else " | |"))
    lines.append(f"\n(paper: 256 px at 0.325 Å/px, Nyquist 0.65 Å; subgroups of "
                 f"{paper.FIG7['subgroup_images']} images)")
    return "\n".join(lines)


def quick_model(work, box, device, n=800, epochs=10):
    """A model trained on ground-truth labels (when no --model is given)."""
    ps = paper.pixel_size_for(box)
    paper.simulate_set(os.path.join(work, "train"), n, box, 99, device=device)
    res, _ = paper.train(os.path.join(work, "train", "particles.xmd"), os.path.join(work, "net"),
                         pixel_size=ps, mode_list="7-9", epochs=epochs, patience=100,
                         input_size=box // 2, device=device)
    return res.model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a model trained at --box px")
    ap.add_argument("--n", type=int, default=1500, help="test images (paper: 50,000)")
    ap.add_argument("--box", type=int, default=64, help="pose size px (paper: 128)")
    ap.add_argument("--recon-box", type=int, default=128, help="map size px (paper: 256)")
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--subgroup", type=int, default=40,
                    help="images per subgroup (paper 899; 0: the smallest group's size)")
    ap.add_argument("--no-hemnma", action="store_true")
    ap.add_argument("--no-refine", action="store_true",
                    help="no column of the network's poses refined by local HEMNMA")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="bench_fig7_")
    note = ""
    model = args.model
    if not model:
        model = quick_model(work, args.box, args.device)
        note = " (network: a quick model trained on ground-truth labels, 800 images, 10 epochs)"
    r = run(model, args.n, args.box, args.recon_box, args.groups, args.subgroup,
            not args.no_hemnma, args.device, work, refine=not args.no_refine)
    print(markdown(r, note))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
