"""Train the DeepHEMNMA network on particles with HEMNMA (or ground-truth) labels.

Input: an .xmd/.star with angleRot angleTilt anglePsi shiftX shiftY
nmaDisplacements and image references. Output folder: model.pt (best model,
self-describing, loads with torch.load(weights_only=True)), last.pt (resume),
curves.csv/png, split.npz (train/val/test rows).
"""
import os


def add_args(p):
    from ..core.config import TrainConfig
    d = TrainConfig()
    p.add_argument("--particles", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pixel-size", type=float, default=None)
    p.add_argument("--mode-list", default=None, help="HEMNMA numbers of the amplitudes (7-9)")
    p.add_argument("--architecture", choices=["joint", "separate"], default=d.architecture)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr,
                   help="Adam learning rate (one-cycle schedule); 1e-3 diverged in bench_network")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--augment", action="store_true", help="label-consistent in-plane rotations")
    p.add_argument("--input-size", type=int, default=None,
                   help="downscale images to this size (px) before the network")
    p.add_argument("--dropout", type=float, default=d.dropout, help="MLP dropout (paper: 0.5)")
    p.add_argument("--coord-channels", action="store_true",
                   help="add x/y coordinate channels to the image (CoordConv): helps the "
                        "network read shifts; default: the paper's 1-channel input")
    p.add_argument("--mahalanobis", type=float, default=None, help="drop label outliers (3.2)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init-model", default=None, help="fine-tune from this model")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto")


def _init_distributed():
    """Under torchrun: one process group (gloo on CPU, nccl on CUDA)."""
    import torch
    import torch.distributed as dist
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def main(args):
    from ..core.nma import parse_mode_list
    _init_distributed()
    from ..core.training import TrainConfig, train
    from ..io.metadata import read_metadata
    from ..io.stacks import load_images
    t = read_metadata(args.particles)
    imgs = load_images(t, os.path.dirname(os.path.abspath(args.particles)))
    cfg = TrainConfig(architecture=args.architecture, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                      patience=args.patience, augment=args.augment, mahalanobis=args.mahalanobis,
                      seed=args.seed, device=args.device,
                      input_size=args.input_size, dropout=args.dropout,
                      coord_channels=args.coord_channels)
    modes = parse_mode_list(args.mode_list) if args.mode_list else None
    res = train(imgs, t, args.out, cfg, modes, args.pixel_size, resume=args.resume,
                init_model=args.init_model)
    print(f"best validation loss {res['best_val_loss']:.4f} after {res['epochs_run']} epochs "
          f"({res['train']} train / {res['val']} val / {res['test']} test) -> "
          f"{os.path.join(args.out, 'model.pt')}")
