"""Training settings (no torch import: the command line and the Scipion form
read their defaults from here without loading torch)."""
import dataclasses

__all__ = ["TrainConfig"]


@dataclasses.dataclass
class TrainConfig:
    architecture: str = "joint"          # 'joint' or 'separate' (the paper's 3 networks)
    epochs: int = 30
    # batch 32 and lr 3e-4 measured by bench_network.py (lr 1e-3 collapsed to the mean)
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    patience: int = 8
    augment: bool = False
    mahalanobis: float = None            # e.g. 3.2
    seed: int = 0
    device: str = "auto"
    dropout: float = 0.5
    max_resident_gb: float = 4.0
    input_size: int = None               # Fourier-downscale images to this size first
    coord_channels: bool = False         # x/y coordinate channels (see core.network)
