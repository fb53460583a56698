"""Contrast transfer function in Scipion/Xmipp parameters.

    CTF(k) = [ sqrt(1 - Q0^2) sin(chi(k)) + Q0 cos(chi(k)) ] * envelope(k)
    chi(k) = pi lambda dz(k) |k|^2 - pi/2 Cs lambda^3 |k|^4 - phase_shift

with ``dz`` the defocus along the direction of k (``defocusU`` along the
astigmatism angle, ``defocusV`` perpendicular; positive = underfocus, Å),
``lambda`` the relativistic electron wavelength (Å) at the voltage (kV), Cs in
mm and Q0 the amplitude contrast. The global sign is Xmipp's: at k = 0 the CTF
is +Q0, so a positive-density particle stays positive ("white", as Scipion
users import their particles). The defocus angle is measured from the x axis
towards y in the [y, x] image. Checked in the tests: identical to Xmipp's
``applyCTF`` (except the ambiguous Nyquist row of astigmatic CTFs), and to
cisTEM's CTF up to its opposite global sign and transposed (kx, ky) grid, within
0.02 at Nyquist (cisTEM's electron wavelength differs by ~1e-5 relatively).

Images are real (B, N, N) torch tensors; CTFs are built on the ``rfft2`` grid
(B, N, N//2+1), unshifted (torch.fft layout), centre of the image at N//2 (the
phase of the FFT does not matter since the CTF is real).
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ..io.metadata import Table

__all__ = ["CTFParams", "electron_wavelength", "ctf_image", "apply_ctf", "phase_flip",
           "wiener_filter", "frequency_grid"]


def electron_wavelength(voltage_kv: float | np.ndarray) -> float | np.ndarray:
    """Relativistic electron wavelength in Å."""
    v = np.asarray(voltage_kv, dtype=np.float64) * 1e3
    return 12.2642598 / np.sqrt(v * (1.0 + 0.978466e-6 * v))


@dataclasses.dataclass
class CTFParams:
    """CTF parameters, scalars or arrays of length B (broadcast)."""
    defocus_u: np.ndarray                 # Å, positive underfocus
    defocus_v: np.ndarray | None = None   # Å (default: defocus_u)
    defocus_angle: np.ndarray = 0.0       # degrees
    voltage: np.ndarray = 300.0           # kV
    cs: np.ndarray = 2.7                  # mm
    amplitude_contrast: np.ndarray = 0.1
    phase_shift: np.ndarray = 0.0         # degrees
    bfactor: np.ndarray = 0.0             # Å^2 envelope exp(-B k^2 / 4)

    def __post_init__(self) -> None:
        if self.defocus_v is None:
            self.defocus_v = self.defocus_u
        fields = [f.name for f in dataclasses.fields(self)]
        arrays = {f: np.atleast_1d(np.asarray(getattr(self, f), dtype=np.float64))
                  for f in fields}
        n = max(len(a) for a in arrays.values())
        for f, a in arrays.items():
            setattr(self, f, np.broadcast_to(a, (n,)).copy())

    def __len__(self) -> int:
        return len(self.defocus_u)

    def subset(self, idx: np.ndarray | slice) -> CTFParams:
        return CTFParams(**{f.name: getattr(self, f.name)[idx]
                            for f in dataclasses.fields(self)})

    @classmethod
    def from_table(cls, table: Table, default_voltage: float = 300.0, default_cs: float = 2.7,
                   default_q0: float = 0.1) -> CTFParams | None:
        """From an Xmipp-named Table (ctfDefocusU ...); None if no CTF columns."""
        if "ctfDefocusU" not in table:
            return None

        def col(name, default):
            return table[name] if name in table else default
        return cls(defocus_u=table["ctfDefocusU"],
                   defocus_v=col("ctfDefocusV", table["ctfDefocusU"]),
                   defocus_angle=col("ctfDefocusAngle", 0.0),
                   voltage=col("ctfVoltage", default_voltage),
                   cs=col("ctfSphericalAberration", default_cs),
                   amplitude_contrast=col("ctfQ0", default_q0),
                   phase_shift=col("ctfPhaseShift", 0.0))

    def to_columns(self) -> dict[str, np.ndarray]:
        return {"ctfDefocusU": self.defocus_u, "ctfDefocusV": self.defocus_v,
                "ctfDefocusAngle": self.defocus_angle, "ctfVoltage": self.voltage,
                "ctfSphericalAberration": self.cs, "ctfQ0": self.amplitude_contrast,
                "ctfPhaseShift": self.phase_shift}


def frequency_grid(box: int, pixel_size: float, rfft: bool = True,
                   device: str | torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(ky, kx) spatial frequencies in 1/Å on the (r)fft2 grid."""
    ky = torch.fft.fftfreq(box, d=pixel_size, device=device, dtype=dtype)
    kx = (torch.fft.rfftfreq if rfft else torch.fft.fftfreq)(box, d=pixel_size, device=device,
                                                             dtype=dtype)
    return torch.meshgrid(ky, kx, indexing="ij")


def ctf_image(params: CTFParams, box: int, pixel_size: float, rfft: bool = True,
              device: str | torch.device | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CTF values (B, box, box//2+1) (or (B, box, box) with rfft=False)."""
    ky, kx = frequency_grid(box, pixel_size, rfft, device, torch.float64)

    def t(a):
        return torch.as_tensor(a, dtype=torch.float64, device=device)[:, None, None]
    lam = t(electron_wavelength(params.voltage))
    k2 = (kx ** 2 + ky ** 2)[None]
    ang = torch.atan2(ky, kx)[None]
    dz = 0.5 * (t(params.defocus_u) + t(params.defocus_v)) + 0.5 * (
        t(params.defocus_u) - t(params.defocus_v)) * torch.cos(
        2 * (ang - torch.deg2rad(t(params.defocus_angle))))
    cs = t(params.cs) * 1e7
    chi = (math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam ** 3 * k2 ** 2
           - torch.deg2rad(t(params.phase_shift)))
    q0 = t(params.amplitude_contrast)
    ctf = torch.sqrt(1 - q0 ** 2) * torch.sin(chi) + q0 * torch.cos(chi)
    ctf = ctf * torch.exp(-t(params.bfactor) * k2 / 4.0)
    return ctf.to(dtype)


def _filter(images, values):
    f = torch.fft.rfft2(images)
    return torch.fft.irfft2(f * values, s=images.shape[-2:])


def apply_ctf(images: torch.Tensor, params: CTFParams, pixel_size: float) -> torch.Tensor:
    """Multiply the images' spectra by their CTF (B, N, N) -> (B, N, N)."""
    c = ctf_image(params, images.shape[-1], pixel_size, device=images.device, dtype=images.dtype)
    return _filter(images, c)


def phase_flip(images: torch.Tensor, params: CTFParams, pixel_size: float) -> torch.Tensor:
    """Flip the phases where the CTF is negative (what HEMNMA expects)."""
    c = ctf_image(params, images.shape[-1], pixel_size, device=images.device, dtype=images.dtype)
    return _filter(images, torch.sign(c))


def wiener_filter(images: torch.Tensor, params: CTFParams, pixel_size: float,
                  snr: float = 10.0) -> torch.Tensor:
    """CTF correction by Wiener filtering: CTF / (CTF^2 + 1/snr)."""
    c = ctf_image(params, images.shape[-1], pixel_size, device=images.device, dtype=images.dtype)
    return _filter(images, c / (c * c + 1.0 / snr))
