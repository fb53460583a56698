"""Train the DeepHEMNMA network on particles with HEMNMA (or ground-truth) labels.

Input: an .xmd/.star with angleRot angleTilt anglePsi shiftX shiftY
nmaDisplacements and image references. Output folder: model.pt (best model,
self-describing, loads with torch.load(weights_only=True)), last.pt
(checkpoint), curves.csv/png, split.npz (train/val/test rows of the input),
rejected.xmd (rows left out: non-finite values, unusable images), config.json.

Running the same command again resumes after the last epoch done (a finished
run reports it is done); other data or options (e.g. another --epochs: the
learning-rate schedule spans them) start afresh and say so; --restart always
starts afresh. Under torchrun the processes share every batch (DDP).

Examples:
  deephemnma train --particles hemnma/aligned_kept.xmd --pixel-size 1.3 \\
      --mode-list 7-9 --input-size 64 --out net
  deephemnma train --particles hemnma/aligned_kept.xmd --out net   # again: resumes
  torchrun --nproc_per_node 4 -m deephemnma train --particles p.xmd --out net
  deephemnma train --particles more.xmd --init-model net/model.pt --out net2
"""
from ..stages import train as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--particles", required=True, help=".xmd/.star with labels and images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pixel-size", type=float, default=d.pixel_size,
                   help="Å/px of the images (default: the stacks' headers)")
    p.add_argument("--mode-list", default=d.mode_list,
                   help="HEMNMA numbers of the amplitudes, e.g. 7-9 (default 7, 8, ...)")
    p.add_argument("--architecture", choices=["joint", "separate"], default=d.architecture)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr,
                   help="AdamW learning rate (one-cycle schedule); 1e-3 diverged in "
                        "bench_network")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--patience", type=int, default=d.patience,
                   help="early stop after this many epochs without validation improvement")
    p.add_argument("--augment", action="store_true", help="label-consistent in-plane rotations")
    p.add_argument("--input-size", type=int, default=d.input_size,
                   help="downscale images to this size (px, even) before the network")
    p.add_argument("--dropout", type=float, default=d.dropout, help="MLP dropout (paper: 0.5)")
    p.add_argument("--coord-channels", action="store_true",
                   help="add x/y coordinate channels to the image (CoordConv): helps the "
                        "network read shifts; default: the paper's 1-channel input")
    p.add_argument("--mahalanobis", type=float, default=d.mahalanobis,
                   help="leave label outliers out of training (paper: 3.2)")
    p.add_argument("--init-model", default=d.init_model, help="fine-tune from this model")
    p.add_argument("--restart", action="store_true",
                   help="start afresh even when OUT holds a resumable run")
    p.add_argument("--resume", action="store_true",
                   help="accepted for old scripts: rerunning resumes by itself")
    p.add_argument("--absolute-paths", action="store_true",
                   help="absolute image references in rejected.xmd")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)


def config(args):
    return stage.Config(
        particles=args.particles, out=args.out, pixel_size=args.pixel_size,
        mode_list=args.mode_list, architecture=args.architecture, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        patience=args.patience, augment=args.augment, input_size=args.input_size,
        dropout=args.dropout, coord_channels=args.coord_channels,
        mahalanobis=args.mahalanobis, init_model=args.init_model, restart=args.restart,
        absolute_paths=args.absolute_paths, seed=args.seed, device=args.device)


def main(args):
    cfg = config(args)
    out = stage.run(cfg)
    if out.primary:
        for line in stage.summary(out, cfg):
            print(line)
