"""Predict normal-mode amplitudes, Euler angles and shifts of particles with a trained model.

Writes an .xmd with the particles' columns plus nmaDisplacements, angleRot
angleTilt anglePsi (degrees) and shiftX shiftY (pixels of the images), in
input order, the conventions of HEMNMA alignment. The images stream by in
chunks (constant memory); finished chunks are kept in OUT.parts/, so the same
command run again after an interruption continues (another input, model or
option starts afresh and says so). Every stack is checked against the model
first (box, pixel size). Rows with a non-finite value, an unusable image or a
non-finite prediction are left out alone and listed in OUT.rejected.xmd.

Example:
  deephemnma predict --model train/model.pt --particles set2.xmd \\
      --pixel-size 2.6 --out predicted/set2_pred.xmd
  # 128 px images of the same field as a 64 px model (shifts in 128 px pixels):
  deephemnma predict --model train/model.pt --particles big.xmd --pixel-size 1.3 \\
      --rescale --out big_pred.xmd
"""
from . import run_and_summarize
from ..stages import predict as stage


def add_args(p):
    d = stage.Config()
    p.add_argument("--model", required=True, help="model file (model.pt of `deephemnma train`)")
    p.add_argument("--particles", required=True, help=".xmd/.star referencing the images")
    p.add_argument("--out", required=True, help="output .xmd")
    p.add_argument("--pixel-size", type=float, default=d.pixel_size,
                   help="Å/px of the images (default: the particle file's or the headers')")
    p.add_argument("--rescale", action="store_true",
                   help="Fourier-crop images larger than the model's box to it (same physical "
                        "size, e.g. 128 px images for a 64 px model); shifts come back in "
                        "the images' pixels")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per pass")
    p.add_argument("--chunk", type=int, default=d.chunk, help="rows per resumable part")
    p.add_argument("--images-flipped", action="store_true",
                   help="the images are already CTF phase-flipped (else they are flipped from "
                        "their CTF columns when the model was trained on flipped images)")
    p.add_argument("--absolute-paths", action="store_true",
                   help="absolute image references in the outputs")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")


def config(args):
    return stage.Config(model=args.model, particles=args.particles, out=args.out,
                        pixel_size=args.pixel_size, rescale=args.rescale,
                        batch_size=args.batch_size, chunk=args.chunk, device=args.device,
                        images_flipped=args.images_flipped,
                        absolute_paths=args.absolute_paths)


def main(args):
    return run_and_summarize(stage, config(args))
