"""align/refine --downscale: the images are aligned Fourier-downscaled, the
shifts read and written in the original images' pixels."""
import numpy as np
import pytest

from deephemnma.core.metrics import angular_errors
from deephemnma.core.simulate import simulate_to_folder
from deephemnma.io.metadata import read_metadata, write_xmd

BOX, PS, SMALL = 96, 0.9, 48        # AK in 86 Å; aligned at 48 px of 1.8 Å


@pytest.fixture(scope="module")
def folder(ak_reference, tmp_path_factory):
    """8 noiseless particles of 96 px with shifts up to 4 Å; start.xmd:
    their poses rotated by 3 deg, shifts moved by 1.5 px (of 96)."""
    from scipy.spatial.transform import Rotation
    from deephemnma.core import rotations as R
    s, modes = ak_reference
    d = tmp_path_factory.mktemp("down") / "d"
    simulate_to_folder(d, s, modes, 8, box=BOX, pixel_size=PS, snr=None, seed=7, quiet=True,
                       amplitude_scale=150, shift_range=4.0)
    t = read_metadata(d / "particles.xmd")
    rng = np.random.default_rng(2)
    axis = rng.normal(size=(len(t), 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(axis * np.radians(3.0)).as_matrix()
    phi = rng.uniform(0, 2 * np.pi, len(t))
    u = t.copy()
    u["angleRot"], u["angleTilt"], u["anglePsi"] = \
        R.matrix_to_euler(dR @ R.euler_to_matrix(t.angles())).T
    u["shiftX"], u["shiftY"] = (t.shifts() + 1.5 * np.column_stack([np.cos(phi),
                                                                     np.sin(phi)])).T
    write_xmd(d / "start.xmd", u)
    return d


def _args(cmd, d, particles, out, *extra):
    return [cmd, "--particles", str(particles), "--modes", str(d), "--structure",
            str(d / "reference.pdb"), "--pixel-size", str(PS), "--out", str(out), *extra]


def _shift_error(est, truth):
    return np.median(np.linalg.norm(est.shifts() - truth.shifts(), axis=1))


def test_align_and_refine_downscaled_write_shifts_in_image_pixels(folder, tmp_path, capsys):
    """align --from-poses and refine at 48 px of 96 px images: the shifts come
    back in 96-px units near the truth (the start is 1.5 px off; shifts left
    in 48-px units would be off by half the true shifts, up to 2.2 px), the
    angles near the truth."""
    from deephemnma.cli import main
    truth = read_metadata(folder / "particles.xmd")
    start = read_metadata(folder / "start.xmd")
    assert np.abs(truth.shifts()).max() > 3.0 and _shift_error(start, truth) > 1.4
    assert main(_args("align", folder, folder / "start.xmd", tmp_path / "a.xmd",
                      "--from-poses", "--cone", "6", "--downscale", str(SMALL))) == 0
    assert "downscaled to 48 px" in capsys.readouterr().out
    a = read_metadata(tmp_path / "a.xmd")
    assert _shift_error(a, truth) < 0.5, (a.shifts(), truth.shifts())
    assert np.median(angular_errors(a.angles(), truth.angles())) < 1.5
    assert main(_args("refine", folder, tmp_path / "a.xmd", tmp_path / "r.xmd",
                      "--refine-fine-iters", "10", "--downscale", str(SMALL))) == 0
    r = read_metadata(tmp_path / "r.xmd")
    assert _shift_error(r, truth) < 0.5, (r.shifts(), truth.shifts())
    # one step from the truth (it moves them by under a pixel): the shifts read
    # are scaled too (read in 48-px units they would start up to 4.4 px off)
    assert main(_args("refine", folder, folder / "particles.xmd", tmp_path / "t.xmd",
                      "--refine-coarse-iters", "0", "--refine-fine-iters", "1",
                      "--downscale", str(SMALL))) == 0
    assert _shift_error(read_metadata(tmp_path / "t.xmd"), truth) < 1.5
    # the same start refined at full size: the same shifts within a fraction of a pixel
    assert main(_args("refine", folder, tmp_path / "a.xmd", tmp_path / "f.xmd",
                      "--refine-fine-iters", "10")) == 0
    f = read_metadata(tmp_path / "f.xmd")
    assert np.median(np.linalg.norm(r.shifts() - f.shifts(), axis=1)) < 0.5


@pytest.mark.parametrize("value,words", [
    ("47", "an even box"), ("8", "at least 16"), ("-2", "an even box"),
    ("128", "larger than the images (96 px)")])
def test_bad_downscale_refused(folder, tmp_path, capsys, value, words):
    """A bad --downscale: exit 2, one line naming it, nothing written."""
    from deephemnma.cli import main
    capsys.readouterr()
    for cmd in ("align", "refine"):
        assert main(_args(cmd, folder, folder / "start.xmd", tmp_path / "o" / "a.xmd",
                          "--downscale", value)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--downscale" in err[0] and words in err[0], err
        assert not (tmp_path / "o").exists()
