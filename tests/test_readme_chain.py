"""The README's command sequence (section "Command line"), chained on tiny data
with every output in a different folder and run from yet another folder
(issue 13, item 4): each command reads the previous one's outputs where they
were written, so every metadata file written must have image references that
resolve from its own folder. Outputs get the user's umask (0644 with umask 022).

The chain follows the README: the test reads the README's ``deephemnma ...``
lines and checks that it runs the same commands in the same order, with every
option the README uses (sizes shrunk: 40 noisy 32 px particles, 1 epoch).
"""
import os
import re
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, shared_file

PS = "2.6"


def readme_commands():
    """[(command, [option names])] of the README's typical run."""
    text = (ROOT / "README.md").read_text()
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s{4}deephemnma (\S+)(.*)$", line)
        if m:
            out.append((m.group(1), re.findall(r"(?<!\S)(--[a-z][a-z-]*)", m.group(2))))
    return out


def run(argv, cwd):
    """``python -m deephemnma <argv>`` from ``cwd`` with umask 022."""
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "deephemnma"] + [str(a) for a in argv],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                       preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, (f"deephemnma {' '.join(map(str, argv))} (in {cwd}) -> exit "
                               f"{r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def unresolved_references(xmd):
    """Image references of ``xmd`` whose stack does not exist relative to the
    file's own folder (or absolute)."""
    from deephemnma.io.metadata import parse_image_ref, read_metadata
    t = read_metadata(xmd)
    if "image" not in t:
        return []
    bad = []
    for ref in dict.fromkeys(str(r) for r in t["image"]):
        _, p = parse_image_ref(ref)
        full = p if os.path.isabs(p) else os.path.join(os.path.dirname(xmd), p)
        if not os.path.isfile(full):
            bad.append(ref)
    return bad


def test_readme_chain_in_separate_folders(tmp_path):
    from deephemnma.io.metadata import read_metadata, write_xmd
    from deephemnma.io.stacks import read_volume
    ak = shared_file("continuousflex", "AK.pdb")
    (tmp_path / "inputs").mkdir()
    shutil.copy(ak, tmp_path / "inputs" / "AK.pdb")
    cwd = tmp_path / "somewhere" / "else"
    cwd.mkdir(parents=True)
    up = "../../"          # from cwd to tmp_path

    steps = []             # (command, argv) in the order run

    def go(*argv):
        steps.append((argv[0], [a for a in argv if str(a).startswith("--")]))
        return run(argv, cwd)

    go("nma", "--structure", up + "inputs/AK.pdb", "--out", up + "nma_out/ref", "--modes", 12)
    go("simulate", "--structure", up + "inputs/AK.pdb", "--modes", up + "nma_out/ref",
       "--out", up + "sim_out/data", "-n", 40, "--box", 32, "--pixel-size", PS, "--seed", 1,
       "--snr", 1.0)
    # the user's two subsets (set1.xmd, set2.xmd), written in a folder of their own
    t = read_metadata(tmp_path / "sim_out" / "data" / "particles.xmd")
    (tmp_path / "subsets").mkdir()
    write_xmd(tmp_path / "subsets" / "set1.xmd", t.subset(np.arange(24)))
    write_xmd(tmp_path / "subsets" / "set2.xmd", t.subset(np.arange(24, 40)))
    assert not unresolved_references(str(tmp_path / "subsets" / "set1.xmd"))

    go("align", "--particles", up + "subsets/set1.xmd", "--modes", up + "nma_out/ref",
       "--structure", up + "nma_out/ref/reference.pdb", "--pixel-size", PS,
       "--out", up + "hemnma_out/hemnma.xmd", "--outlier-threshold", 3.2,
       "--angular-step", 30, "--coarse-iters", 3, "--fine-iters", 2, "--chunk", 8)
    kept = tmp_path / "hemnma_out" / "hemnma_kept.xmd"
    assert kept.exists()
    go("train", "--particles", up + "hemnma_out/hemnma_kept.xmd", "--out",
       up + "train_out/model", "--mode-list", "7-9", "--epochs", 1, "--input-size", 32,
       "--batch-size", 8)
    go("predict", "--model", up + "train_out/model/model.pt", "--particles",
       up + "subsets/set2.xmd", "--out", up + "pred_out/predicted.xmd")
    go("refine", "--particles", up + "pred_out/predicted.xmd", "--modes", up + "nma_out/ref",
       "--structure", up + "nma_out/ref/reference.pdb", "--pixel-size", PS,
       "--out", up + "refine_out/refined.xmd", "--refine-coarse-iters", 2,
       "--refine-fine-iters", 2)
    assert not unresolved_references(str(tmp_path / "refine_out" / "refined.xmd"))
    go("landscape", "--particles", up + "pred_out/predicted.xmd", "--also",
       up + "hemnma_out/hemnma_kept.xmd", "--out", up + "land_out/land", "--split", "1:12",
       "--min-group", 5, "--structure", up + "nma_out/ref/reference.pdb",
       "--modes", up + "nma_out/ref")
    land = tmp_path / "land_out" / "land"
    assert (land / "group_01.xmd").exists() and (land / "centroid_01.pdb").exists()
    go("reconstruct", "--particles", up + "land_out/land/group_01.xmd", "--pixel-size", PS,
       "--out", up + "maps_out/group_01.mrc", "--min-images", 5)
    go("model-map", "--structure", up + "land_out/land/centroid_01.pdb", "--box", 32,
       "--pixel-size", PS, "--out", up + "cm_out/centroid_01.mrc")
    out = go("fsc", up + "maps_out/group_01.mrc", up + "cm_out/centroid_01.mrc",
             "--png", up + "fsc_out/fsc_01.png")

    # the chain is the README's: same commands, same order, every README option
    readme = readme_commands()
    assert [c for c, _ in readme] == [c for c, _ in steps], \
        f"README sequence {[c for c, _ in readme]} != tested {[c for c, _ in steps]}"
    for (cmd, opts), (_, used) in zip(readme, steps):
        assert set(opts) <= set(used), f"{cmd}: README options {sorted(set(opts) - set(used))}" \
                                       " not exercised"

    # results are usable
    vol, vs = read_volume(tmp_path / "maps_out" / "group_01.mrc")
    assert vol.shape == (32, 32, 32) and np.isfinite(vol).all() and np.abs(vol).max() > 0
    assert vs == pytest.approx(float(PS), rel=1e-3)
    assert (tmp_path / "fsc_out" / "fsc_01.png").stat().st_size > 0
    assert "FSC" in out
    pred = read_metadata(tmp_path / "pred_out" / "predicted.xmd")
    assert len(pred) == 16 and np.isfinite(pred["nmaDisplacements"]).all()

    # every metadata file written resolves its images from its own folder, and
    # nothing is left in the working folder; files have the umask's mode
    xmds = [os.path.join(d, n) for d, _, ns in os.walk(tmp_path) for n in ns
            if n.endswith((".xmd", ".star"))]
    assert len(xmds) >= 8
    for x in xmds:
        assert not unresolved_references(x), f"{x}: unresolved {unresolved_references(x)[:3]}"
    assert not os.listdir(cwd), f"files written in the working folder: {os.listdir(cwd)}"
    made = [os.path.join(d, n) for d, _, ns in os.walk(tmp_path) for n in ns]
    stray = [m for m in made if m.endswith((".part", ".tmp")) or ".parts" in m
             or os.path.basename(m).startswith(".")]
    assert not stray, f"temporary files left: {stray}"
    wrong = [f"{m} {oct(stat.S_IMODE(os.stat(m).st_mode))}" for m in made
             if "inputs" not in m and "subsets" not in m
             and stat.S_IMODE(os.stat(m).st_mode) != 0o644]
    assert not wrong, f"outputs not created with the umask (0644): {wrong}"
