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

As in the paper the network sees phase-flipped images: rows with CTF columns
are phase-flipped from them unless --images-flipped says the images are
flipped already (predict applies the same rule). --schedule paper is the
paper's training: Adam with an L2 term of 1e-5, lr 1e-5 divided by 10 every
80 epochs, 400 epochs, batch size 2, no early stopping (explicit --lr,
--epochs, --batch-size, --patience... still win). --augment-copies 1 is the
paper's augmentation (Supp. D): each training image gets a copy rotated
in-plane at random and shifted by up to --augment-shift (7) px, labels
updated.

Examples:
  deephemnma train --particles hemnma/aligned_kept.xmd --pixel-size 1.3 \\
      --mode-list 7-9 --input-size 64 --out net
  deephemnma train --particles hemnma/aligned.xmd --mahalanobis 3.2 \\
      --schedule paper --augment-copies 1 --out net_paper
  deephemnma train --particles hemnma/aligned_kept.xmd --out net   # again: resumes
  torchrun --nproc_per_node 4 -m deephemnma train --particles p.xmd --out net
  deephemnma train --particles more.xmd --init-model net/model.pt --out net2
  # the pose-aware network: images read at their consensus poses
  deephemnma train --particles hemnma/aligned.xmd --pose-input --structure AK.pdb \\
      --modes nma/ --consensus set1.xmd --input-size 32 --dropout 0 --out net_poses

--pose-input: the network reads each image at its consensus pose (moved by its
shifts, turned by minus its psi) beside the reference's projection there and
its derivatives along the modes (from --structure and --modes), with the view
direction given to the MLP; it learns the amplitudes and the correction from
the consensus pose to the labelled one. --consensus gives the consensus poses
(default: the particles' own). predict then reads the poses of the particles
it is given as their consensus poses.
"""
from ..core.config import PAPER_SCHEDULE, SCHEDULES
from ..core.network import TRUNKS
from . import run_and_summarize
from ..stages import train as stage


def add_args(p):
    d = stage.Config()
    sched = "default from --schedule: onecycle {}, paper {}".format
    p.add_argument("--particles", required=True, help=".xmd/.star with labels and images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pixel-size", type=float, default=d.pixel_size,
                   help="Å/px of the images (default: the stacks' headers)")
    p.add_argument("--mode-list", default=d.mode_list,
                   help="HEMNMA numbers of the amplitudes, e.g. 7-9 (default 7, 8, ...)")
    p.add_argument("--architecture", choices=["joint", "separate"], default=d.architecture)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="onecycle: AdamW, one-cycle learning rate over the epochs (measured "
                        "on CPU, bench_network); paper: Adam + L2, lr divided by 10 every "
                        "--lr-step epochs, and the paper's defaults for the options below")
    p.add_argument("--epochs", type=int, default=None,
                   help=sched(d.epochs, PAPER_SCHEDULE["epochs"]))
    p.add_argument("--batch-size", type=int, default=None,
                   help=sched(d.batch_size, PAPER_SCHEDULE["batch_size"]))
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (onecycle: the peak; 1e-3 diverged in bench_network; "
                        "paper: the start); " + sched(d.lr, PAPER_SCHEDULE["lr"]))
    p.add_argument("--weight-decay", type=float, default=None,
                   help="AdamW's decoupled decay (onecycle) or the L2 term added to the "
                        "gradients (paper); " + sched(d.weight_decay,
                                                      PAPER_SCHEDULE["weight_decay"]))
    p.add_argument("--lr-step", type=int, default=d.lr_step,
                   help="paper schedule: epochs between learning-rate divisions")
    p.add_argument("--lr-gamma", type=float, default=d.lr_gamma,
                   help="paper schedule: learning-rate factor every --lr-step epochs")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--patience", type=int, default=None,
                   help="early stop after this many epochs without validation improvement; "
                        + sched(d.patience, PAPER_SCHEDULE["patience"]))
    p.add_argument("--augment", action="store_true",
                   help="label-consistent random in-plane rotation of every training batch")
    p.add_argument("--augment-copies", type=int, default=d.augment_copies,
                   help="label-consistent rotated and shifted copies of each training image "
                        "(the paper's augmentation: 1)")
    p.add_argument("--augment-shift", type=float, default=d.augment_shift,
                   help="px: the copies are shifted by up to this much in x and y (paper: 7)")
    p.add_argument("--images-flipped", action="store_true",
                   help="the images are CTF phase-flipped already (else they are flipped "
                        "from their CTF columns)")
    p.add_argument("--input-size", type=int, default=d.input_size,
                   help="downscale images to this size (px, even) before the network")
    p.add_argument("--dropout", type=float, default=d.dropout, help="MLP dropout (paper: 0.5)")
    p.add_argument("--coord-channels", action="store_true",
                   help="add x/y coordinate channels to the image (CoordConv): helps the "
                        "network read shifts; default: the paper's 1-channel input")
    p.add_argument("--pose-input", action="store_true",
                   help="the pose-aware network: read the images at their consensus poses "
                        "(needs --structure and --modes; predict then needs particles with "
                        "poses)")
    p.add_argument("--structure", default=d.structure,
                   help="--pose-input: the reference the modes belong to")
    p.add_argument("--modes", default=d.modes,
                   help="--pose-input: modes folder / modes.xmd (ContinuousFlex)")
    p.add_argument("--selection", default=d.selection,
                   help="--pose-input: atoms of the structure")
    p.add_argument("--consensus", default=d.consensus,
                   help="--pose-input: .xmd/.star with the particles' consensus poses, rows "
                        "matched by itemId or image (default: the particles' own poses)")
    p.add_argument("--trunk", choices=list(TRUNKS), default=d.trunk,
                   help="the network's trunk (resnet34: the paper's)")
    p.add_argument("--mahalanobis", type=float, default=d.mahalanobis,
                   help="leave label outliers out of training (paper: 3.2)")
    p.add_argument("--init-model", default=d.init_model, help="fine-tune from this model")
    p.add_argument("--restart", action="store_true",
                   help="start afresh even when OUT holds a resumable run")
    p.add_argument("--absolute-paths", action="store_true",
                   help="absolute image references in rejected.xmd")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)


def config(args):
    d = stage.Config()
    # options left out take the schedule's defaults (the paper's with --schedule paper)
    defaults = PAPER_SCHEDULE if args.schedule == "paper" else {
        k: getattr(d, k) for k in PAPER_SCHEDULE}
    given = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                           "patience")}
    numbers = {k: defaults[k] if v is None else v for k, v in given.items()}
    return stage.Config(
        particles=args.particles, out=args.out, pixel_size=args.pixel_size,
        mode_list=args.mode_list, architecture=args.architecture, schedule=args.schedule,
        lr_step=args.lr_step, lr_gamma=args.lr_gamma, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, augment=args.augment,
        augment_copies=args.augment_copies, augment_shift=args.augment_shift,
        images_flipped=args.images_flipped, input_size=args.input_size,
        dropout=args.dropout, coord_channels=args.coord_channels, mahalanobis=args.mahalanobis,
        init_model=args.init_model, restart=args.restart, absolute_paths=args.absolute_paths,
        seed=args.seed, device=args.device, pose_input=args.pose_input,
        structure=args.structure, modes=args.modes, selection=args.selection,
        consensus=args.consensus, trunk=args.trunk, **numbers)


def main(args):
    return run_and_summarize(stage, config(args))
