"""Settings of HEMNMA alignment and of training (no torch import: the command
line and the Scipion forms read their defaults from here without loading torch)."""
from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["AlignOptions", "TrainConfig", "PAPER_SCHEDULE", "SCHEDULES", "ALIGN_STAGES",
           "result_options"]


@dataclasses.dataclass
class TrainConfig:
    """Options of a training run (core.training); the train stage extends it
    with its files and checks the values (stages.train.Config.validate)."""
    architecture: str = "joint"          # 'joint' or 'separate' (the paper's 3 networks)
    epochs: int = 30                     # the one-cycle learning-rate schedule spans them
    # batch 32 and lr 3e-4 measured by bench_network.py (lr 1e-3 collapsed to the mean)
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-5
    # 'onecycle': AdamW (decoupled weight decay), one-cycle lr over the epochs;
    # 'paper': Adam with weight_decay as an L2 term added to the gradients, lr
    # divided by lr_gamma^-1 every lr_step epochs (see PAPER_SCHEDULE)
    schedule: str = "onecycle"
    lr_step: int = 80                    # epochs between lr divisions ('paper')
    lr_gamma: float = 0.1                # lr factor at each step ('paper')
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    patience: int = 8                    # epochs without validation improvement before stopping
    augment: bool = False                # random in-plane rotation of every training batch
    augment_copies: int = 0              # rotated + shifted copies of each training image
    #                                      (the paper's Supp. D doubles its set: 1)
    augment_shift: float = 7.0           # px: copies shifted by U[-s, s] in x and y (paper: 7)
    mahalanobis: float | None = None     # e.g. 3.2 (statistics of the training rows)
    images_flipped: bool = False         # images already CTF phase-flipped (else flipped
    #                                      from their CTF columns: the network sees flipped images)
    seed: int = 0
    device: str = "auto"
    dropout: float = 0.5
    max_resident_gb: float = 4.0         # images kept on the device up to this many GB
    input_size: int | None = None        # px: Fourier-downscale images to this size first
    coord_channels: bool = False         # x/y coordinate channels (see core.network)
    pose_input: bool = False             # read the images at their consensus poses
    #                                      (core.pose_input): the pose-aware network
    trunk: str = "resnet34"              # the network's trunk: resnet34 or resnet18


# The paper's training (Hamitouche & Jonic 2022, Methods, Stage 2): "a batch
# size of 2 and 400 epochs of Adam optimization method. The starting learning
# rate was 10^-5. The learning rate was gradually decreased by dividing it by 10
# each 80 epochs"; "a weight decay of 10^-5 (L2 regularization term) was added
# to the gradients"; dropout 0.5 in the MLP. No early stopping is described.
SCHEDULES = ("onecycle", "paper")
PAPER_SCHEDULE = dict(schedule="paper", lr=1e-5, weight_decay=1e-5, epochs=400, batch_size=2,
                      lr_step=80, lr_gamma=0.1, patience=400, dropout=0.5)


#: the stages that use AlignOptions: the global search (Aligner.align) and the
#: local refinement from given poses (Aligner.refine)
ALIGN_STAGES = ("align", "refine")
BOTH = ALIGN_STAGES


def _option(default, affects: tuple, from_poses_only: bool = False) -> dataclasses.Field:
    """An AlignOptions field and the stages whose results it changes
    (``affects``: some of ALIGN_STAGES; () for an option of speed alone, such
    as the device); ``from_poses_only``: it changes them only when
    ``from_poses`` is on (an option of align --from-poses alone).
    :func:`result_options` reads it: a stage's run stamp holds the options
    that change its results, and a field without this metadata is an error
    there (tests/test_align_resume.py checks every field has it)."""
    unknown = set(affects) - set(ALIGN_STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}")
    return dataclasses.field(default=default, metadata={"affects": tuple(affects),
                                                        "from_poses_only": from_poses_only})


@dataclasses.dataclass
class AlignOptions:
    # box sizes, coarse to fine (default box//2, box)
    pyramid: tuple = _option(None, BOTH)
    angular_step: float = _option(12.0, ("align",))  # degrees, global search
    # deformed references at +-this along each mode (0: none)
    search_amplitude: float = _option(150.0, ("align",))
    # and at the 2^M corners (+-a, ..., +-a), at most this many
    search_corners: int = _option(16, ("align",))
    # and at +-a on two modes at once, at most this many of the 2M(M-1) (0: none)
    search_pairs: int = _option(0, ("align",))
    max_shift: float = _option(3.0, ("align",))      # Å, global search half-range
    n_candidates: int = _option(4, ("align",))
    # candidates differ in orientation by > this x angular_step
    candidate_separation: float = _option(1.5, ("align",))
    # and the best one's projection direction with this many best amplitudes in all.
    # benchmarks/bench_lowsnr.py, 300 images at SNR 0.1 (64 px, modes 7-9): search_pairs 12,
    # amplitude_candidates 3, fine_candidates 2: misses 4.3 -> 2.0 % (the data preferring
    # the wrong pose in 1.0 %), amplitude MAE 14.4 -> 11.1; ~1.2-1.5x the time
    amplitude_candidates: int = _option(1, ("align",))
    # best coarse candidates refined at the finer levels
    fine_candidates: int = _option(1, ("align",))
    coarse_iters: int = _option(40, ("align",))
    fine_iters: int = _option(25, ("align",))
    # align from the particles' poses (Aligner.align_from_poses; benchmarks/bench_from_poses.py):
    # orientations within this cone (degrees) of each particle's, shifts within this window (Å)
    # of its own, the global search's amplitudes; the best local_candidates refined by
    # local_coarse_iters Levenberg-Marquardt iterations at the coarse level (the first two
    # thirds on low-passed images), the best of them local_fine_iters at each finer level.
    # 200 images at 64 px from 2-10 deg starts: 3.5-4.2x the global search's speed, no misses,
    # amplitude MAE 0.8x its. On 60 images: 5 coarse iterations (3 low-passed) or 2
    # candidates were as accurate; 4 (2 low-passed) left 2-3 % of the amplitudes far off,
    # no amplitude search (search_amplitude 0) 10-25 %; without the low-pass 1-2 %.
    # 4 fine iterations rather than 2: the same there, and on 100 particles of the real-data
    # stand-in (SNR 0.07, B 80, 128 px, given 2.40 deg off) median 2.37 deg instead of 2.44.
    # These change align's results only with from_poses (from_poses_only).
    from_poses: bool = _option(False, ("align",))
    cone: float = _option(12.0, ("align",), from_poses_only=True)
    shift_window: float = _option(3.0, ("align",), from_poses_only=True)
    local_candidates: int = _option(1, ("align",), from_poses_only=True)
    local_coarse_iters: int = _option(6, ("align",), from_poses_only=True)
    local_fine_iters: int = _option(4, ("align",), from_poses_only=True)
    # a Gaussian prior on the rotation from each particle's given orientation, whose RMS angle
    # is this (degrees; 0: none), weighed against the image's likelihood
    # (Aligner._prior_weight). benchmarks/bench_pose_prior.py, 300 particles of the
    # real-data stand-in (SNR 0.07, B 80, 128 px aligned at 64 px, poses 3 deg off, median
    # 2.40 deg): without it median 2.80 deg and 7 % beyond 10 deg (6.7 % when started from
    # the true poses: the images prefer those wrong poses); 3 deg: 1.80, none beyond 10 deg,
    # deformations closer; 5 deg: 2.12, none. bench_engines.py --from-poses 3 (SNR 0.1,
    # 64 px): misses 0-0.5 % with it on our and ttsim3d images, 8-20.5 % without (the global
    # search 6-7.5 %). From poses 10 deg off (bench_from_poses.py) the amplitudes err 1.9x.
    pose_sigma: float = _option(3.0, ("align",), from_poses_only=True)
    # Aligner.refine (local only, no global search; benchmarks/bench_refine.py): steps at
    # the coarse level (0: none), then at each finer level. From the paper's network
    # errors (2.5 deg), 10 + 25 matched full HEMNMA; 0 + 25: ~15 % faster, a little less
    # accurate, fails more from starts > 5 deg
    refine_coarse_iters: int = _option(10, ("refine",))
    refine_fine_iters: int = _option(25, ("refine",))
    lr_rotation: float = _option(0.03, BOTH)         # radians per step (Adam)
    lr_shift: float = _option(0.3, BOTH)             # pixels of the level
    lr_amplitude: float = _option(8.0, BOTH)         # amplitude units
    mask_radius: float = _option(0.45, BOTH)         # fraction of the box
    sigma: float = _option(1.0, BOTH)      # atom Gaussian std (Å) of the 'gaussian' atom model
    # atoms as projected (core.scattering): 'gaussian' (std sigma, weight Z), 'scattering'
    # (one Gaussian per element fitted to its electron scattering factor), 'scattering5'
    # (the factor's five Gaussians). benchmarks/bench_engines.py: on ttsim3d images the
    # default (sigma 1, B 0) was as accurate as on our own; sharper atoms (scattering, B 0)
    # missed more at low SNR
    atom_model: str = _option("gaussian", BOTH)
    # Å^2 widening every atom (number), or 'auto': estimated from the particles
    # (Aligner.estimate_b_factor)
    b_factor: float | str = _option(0.0, BOTH)
    batch_size: int = _option(64, BOTH)
    images_flipped: bool = _option(False, BOTH)      # images already phase flipped
    # CPU: worker threads, one torch thread each (0: all CPUs)
    threads: int = _option(0, ())
    device: str = _option("cpu", ())


def result_options(options: AlignOptions, stage: str) -> dict[str, Any]:
    """{name: value} of the AlignOptions ``options`` that change the results
    of ``stage`` ('align' or 'refine'): what its run stamp holds (the options
    of align --from-poses alone only when ``from_poses`` is on)."""
    if stage not in ALIGN_STAGES:
        raise ValueError(f"unknown stage {stage!r}: {' or '.join(ALIGN_STAGES)}")
    out = {}
    for f in dataclasses.fields(AlignOptions):
        if "affects" not in f.metadata:
            raise TypeError(f"AlignOptions.{f.name} does not say which stages' results it "
                            "changes: declare it with _option(default, affects)")
        if f.metadata.get("from_poses_only") and not options.from_poses:
            continue
        if stage in f.metadata["affects"]:
            out[f.name] = getattr(options, f.name)
    return out
