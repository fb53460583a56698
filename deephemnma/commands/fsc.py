"""Fourier shell correlation between two maps: resolution at 0.5 and 0.143 and a PNG curve."""


def add_args(p):
    p.add_argument("map1")
    p.add_argument("map2")
    p.add_argument("--pixel-size", type=float, default=None, help="default: from the header")
    p.add_argument("--png", default=None, help="write the FSC curve here")
    p.add_argument("--json", default=None, help="write the resolutions and curve here")


def main(args):
    from ..core.reconstruct import fsc_resolution
    from ..errors import InputError
    from ..io.stacks import read_volume
    a, pa = read_volume(args.map1)
    b, _ = read_volume(args.map2)
    ps = args.pixel_size or pa
    if not ps:
        raise InputError(f"{args.map1}: no voxel size in the header; give --pixel-size")
    r = fsc_resolution(a, b, ps)
    print(f"FSC 0.5: {r['res_0.5']:.2f} Å   FSC 0.143: {r['res_0.143']:.2f} Å")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"res_0.5": float(r["res_0.5"]), "res_0.143": float(r["res_0.143"]),
                       "freq": [float(x) for x in r["freq"]],
                       "fsc": [float(x) for x in r["fsc"]]}, f)
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(r["freq"], r["fsc"])
        for th in (0.5, 0.143):
            ax.axhline(th, ls="--", lw=0.8, color="gray")
        ax.set_xlabel("spatial frequency (1/Å)")
        ax.set_ylabel("FSC")
        ax.set_ylim(-0.1, 1.05)
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
        plt.close(fig)
