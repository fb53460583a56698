"""Settings of HEMNMA alignment and of training (no torch import: the command
line and the Scipion forms read their defaults from here without loading torch)."""
import dataclasses

__all__ = ["AlignOptions", "TrainConfig", "PAPER_SCHEDULE", "SCHEDULES"]


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
    mahalanobis: float = None            # e.g. 3.2 (statistics of the training rows)
    images_flipped: bool = False         # images already CTF phase-flipped (else flipped
    #                                      from their CTF columns: the network sees flipped images)
    seed: int = 0
    device: str = "auto"
    dropout: float = 0.5
    max_resident_gb: float = 4.0         # images kept on the device up to this many GB
    input_size: int = None               # px: Fourier-downscale images to this size first
    coord_channels: bool = False         # x/y coordinate channels (see core.network)


# The paper's training (Hamitouche & Jonic 2022, Methods, Stage 2): "a batch
# size of 2 and 400 epochs of Adam optimization method. The starting learning
# rate was 10^-5. The learning rate was gradually decreased by dividing it by 10
# each 80 epochs"; "a weight decay of 10^-5 (L2 regularization term) was added
# to the gradients"; dropout 0.5 in the MLP. No early stopping is described.
SCHEDULES = ("onecycle", "paper")
PAPER_SCHEDULE = dict(schedule="paper", lr=1e-5, weight_decay=1e-5, epochs=400, batch_size=2,
                      lr_step=80, lr_gamma=0.1, patience=400, dropout=0.5)


@dataclasses.dataclass
class AlignOptions:
    pyramid: tuple = None              # box sizes, coarse to fine (default box//2, box)
    angular_step: float = 12.0         # degrees, global search
    search_amplitude: float = 150.0    # deformed references at +-this along each mode (0: none)
    search_corners: int = 16           # and at the 2^M corners (+-a, ..., +-a), at most this many
    max_shift: float = 3.0             # Å, global search half-range
    n_candidates: int = 4
    candidate_separation: float = 1.5  # candidates differ in orientation by > this x angular_step
    fine_candidates: int = 1           # best coarse candidates refined at the finer levels
    coarse_iters: int = 40
    fine_iters: int = 25
    # Aligner.refine (local only, no global search; benchmarks/bench_refine.py): steps at
    # the coarse level (0: none), then at each finer level. From the paper's network
    # errors (2.5 deg), 10 + 25 matched full HEMNMA; 0 + 25: ~15 % faster, a little less
    # accurate, fails more from starts > 5 deg
    refine_coarse_iters: int = 10
    refine_fine_iters: int = 25
    lr_rotation: float = 0.03          # radians per step (Adam)
    lr_shift: float = 0.3              # pixels of the level
    lr_amplitude: float = 8.0          # amplitude units
    mask_radius: float = 0.45          # fraction of the box
    sigma: float = 1.0                 # atom Gaussian std (Å) of the 'gaussian' atom model
    # atoms as projected (core.scattering): 'gaussian' (std sigma, weight Z), 'scattering'
    # (one Gaussian per element fitted to its electron scattering factor), 'scattering5'
    # (the factor's five Gaussians). benchmarks/bench_engines.py: on ttsim3d images the
    # default (sigma 1, B 0) was as accurate as on our own; sharper atoms (scattering, B 0)
    # missed more at low SNR
    atom_model: str = "gaussian"
    b_factor: object = 0.0             # Å^2 widening every atom (number), or 'auto': estimated
    #                                    from the particles (Aligner.estimate_b_factor)
    batch_size: int = 64
    images_flipped: bool = False       # images already phase flipped
    threads: int = 0                   # CPU: worker threads, one torch thread each (0: all CPUs)
    device: str = "cpu"
