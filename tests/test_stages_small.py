"""The small stages (model-map, fsc) and what the nma/simulate stages promise to
the command line and the Scipion protocols: bad input ends as a real process
with exit code 2, one line, no traceback and nothing written; the protocols
build the stage's Config and show its messages."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from deephemnma.errors import InputError
from deephemnma.io.stacks import read_volume, write_volume

from conftest import ROOT, shared_file


def _process(argv, cwd):
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "deephemnma"] + [str(a) for a in argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cmd,args,word", [
    ("simulate", ["-n", "-5"], "-n"), ("simulate", ["--box", "-48"], "--box"),
    ("simulate", ["--pixel-size", "0"], "--pixel-size"), ("nma", ["--modes", "6"], "7 modes")])
def test_process_bad_input_one_line(tmp_path, cmd, args, word):
    ak = shared_file("continuousflex", "AK.pdb")
    r = _process([cmd, "--structure", ak, "--out", tmp_path / "new" / "out"] + args, tmp_path)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith(f"deephemnma {cmd}: error:"), lines
    assert word in lines[0]
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def ak_maps(tmp_path_factory):
    """A map of AK (48 px, 2 Å), and the same map with white noise."""
    from deephemnma.stages import model_map
    d = tmp_path_factory.mktemp("maps")
    ak = str(shared_file("continuousflex", "AK.pdb"))
    m = model_map.run(model_map.Config(structure=ak, out=str(d / "ak.mrc"), box=48,
                                       pixel_size=2.0))
    vol, _ = read_volume(m.map)
    noisy = vol + np.random.default_rng(0).normal(0, 4 * vol.std(), vol.shape)
    write_volume(d / "noisy.mrc", noisy, 2.0)
    return d, (m, str(d / "noisy.mrc"))


def test_model_map_is_centred_and_checked(ak_maps, tmp_path):
    from deephemnma.core.structure import read_structure
    from deephemnma.stages import model_map
    d, (m1, _) = ak_maps
    vol, vs = read_volume(m1.map)
    assert vol.shape == (48,) * 3 and vs == pytest.approx(2.0)
    z, y, x = np.indices(vol.shape)
    centre = [(vol * c).sum() / vol.sum() for c in (x, y, z)]
    assert np.allclose(centre, 24, atol=0.5)                # centroid at box // 2
    ak = read_structure(shared_file("continuousflex", "AK.pdb"))
    assert m1.n_atoms == len(ak)
    assert vol.sum() == pytest.approx(ak.weights.sum(), rel=1e-3)   # each atom integrates to Z
    cfg = model_map.Config(structure=str(shared_file("continuousflex", "AK.pdb")),
                           out=str(tmp_path / "o" / "m.mrc"), box=48, pixel_size=2.0)
    for changes, match in [(dict(box=16, pixel_size=1.0), "beyond the half box"),
                           (dict(box=4), "--box"), (dict(box=48.5), "--box"),
                           (dict(pixel_size=0.0), "--pixel-size"), (dict(sigma=-1.0), "--sigma"),
                           (dict(out=cfg.structure), "also an input")]:
        with pytest.raises(InputError, match=match):
            model_map.run(cfg.replace(**changes))
    assert not (tmp_path / "o").exists()


def test_fsc_curve_json_and_png_without_pyplot(ak_maps, tmp_path):
    """A map and the map with noise: FSC ~1 at low frequency, falling below
    0.5 before Nyquist; resolutions in the JSON that the landscape protocol
    reads; the PNG is drawn without pyplot (no backend chosen by the stage)."""
    import json
    d, (m1, m2) = ak_maps
    code = ("import sys, json; from deephemnma.stages import fsc; "
            f"o = fsc.run(fsc.Config(map1={m1.map!r}, map2={m2!r}, "
            f"png={str(tmp_path / 'f.png')!r}, json={str(tmp_path / 'f.json')!r})); "
            "print(json.dumps(['matplotlib.pyplot' in sys.modules, o.res_05]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 0, r.stderr
    pyplot, res = json.loads(r.stdout.splitlines()[-1])
    assert not pyplot
    saved = json.load(open(tmp_path / "f.json"))
    assert saved["res_0.5"] == pytest.approx(res)
    assert saved["fsc"][1] > 0.95 and 6.0 < saved["res_0.5"] < 48 * 2.0
    assert saved["res_0.143"] < saved["res_0.5"]
    assert pathlib.Path(tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    from deephemnma.stages import fsc
    same = fsc.run(fsc.Config(map1=m1.map, map2=m1.map))
    assert same.res_05 == pytest.approx(4.0) and same.pixel_size == pytest.approx(2.0)


def test_fsc_refuses_maps_it_cannot_compare(ak_maps, tmp_path):
    from deephemnma.stages import fsc
    d, (m1, _) = ak_maps
    vol, _ = read_volume(m1.map)
    write_volume(tmp_path / "small.mrc", vol[:40, :40, :40], 2.0)
    write_volume(tmp_path / "other_voxel.mrc", vol, 2.5)
    bad = vol.copy()
    bad[3, 4, 5] = np.nan
    write_volume(tmp_path / "nan.mrc", bad, 2.0)
    write_volume(tmp_path / "flat.mrc", vol[:, :, :40], 2.0)
    out = dict(png=str(tmp_path / "o" / "f.png"), json=str(tmp_path / "o" / "f.json"))
    for map2, match in [("small.mrc", "different shapes"), ("other_voxel.mrc", "voxel sizes"),
                        ("nan.mrc", "NaN"), ("flat.mrc", "not cubic")]:
        with pytest.raises(InputError, match=match):
            fsc.run(fsc.Config(map1=m1.map, map2=str(tmp_path / map2), **out))
    with pytest.raises(InputError, match="--pixel-size"):
        fsc.run(fsc.Config(map1=m1.map, map2=m1.map, pixel_size=-1.0, **out))
    with pytest.raises(InputError, match="also an input"):
        fsc.run(fsc.Config(map1=m1.map, map2=m1.map, png=m1.map))
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------
# protocols: the stage's Config, its messages, no command line underneath
def test_protocols_call_the_stages_directly():
    for name in ("protocol_nma.py", "protocol_synthesize.py"):
        src = (ROOT / "deephemnma" / "protocols" / name).read_text()
        for word in ("commands", "argparse", "run_command", "argv"):
            assert word not in src, f"{name} mentions {word}"
        assert "self._runHere(stage, " in src and "self._configErrors(self._config)" in src


def test_protocol_forms_show_the_stage_messages():
    pytest.importorskip("pwem")
    from deephemnma import protocols as P
    from deephemnma.stages import nma, simulate
    prot = P.DeepHEMNMAProtNMA()
    assert prot._validate() == ["no input structure or map"]
    assert prot.blockSize.get() == nma.Config().block_size
    assert prot._config().method == "auto"
    prot.numberOfModes.set(5)
    msg = prot._validate()
    with pytest.raises(InputError) as e:
        nma.Config(n_modes=5).validate_options()
    # the stage's message, naming the form's field instead of the option
    assert str(e.value).startswith("--modes 5:")
    assert msg == [str(e.value).replace("--modes", "*Number of modes*"),
                   "no input structure or map"]
    syn = P.DeepHEMNMAProtSynthesize()
    assert syn._validate() == []
    for param, value, match in [("box", 31, "*Box (px)* must be an even number"),
                                ("modeList", "7,8", "exactly 3 modes")]:
        syn = P.DeepHEMNMAProtSynthesize()
        getattr(syn, param).set(value)
        errors = syn._validate()
        assert len(errors) == 1 and match in errors[0] and "--" not in errors[0], errors
    # values the form's own validators refuse (pyworkflow shows those): not repeated
    for param, value in [("numberOfImages", 0), ("samplingRate", -1.0)]:
        syn = P.DeepHEMNMAProtSynthesize()
        getattr(syn, param).set(value)
        assert syn.getDefinition().getParam(param).validate(value) and syn._validate() == []
    syn = P.DeepHEMNMAProtSynthesize()
    syn.snr.set(0.0)
    syn.defocus.set(0.0)
    cfg = syn._config()
    assert not cfg.noise and not cfg.ctf and syn._validate() == []
    assert cfg.rendering() == 4 and cfg.n == simulate.Config().n


def test_chunk_store_only_the_primary_prepares_the_folder(tmp_path):
    """Under torchrun every process opens the parts folder: a non-primary
    process touches nothing (a part another process is writing, a stamp of
    another run) and waits at the barrier; the primary clears a folder of
    another stamp and writes its own, before the barrier."""
    import json
    from deephemnma.stages.base import ChunkStore
    folder = tmp_path / "out.xmd.parts"
    folder.mkdir()
    (folder / ChunkStore.STAMP).write_text(json.dumps({"run": "other"}))
    writing = folder / ".000000001.abcdefgh.tmp.npz"        # another rank's part being written
    writing.write_bytes(b"x")
    calls = []
    ChunkStore(folder, {"run": "this"}, primary=False, barrier=lambda: calls.append("barrier"))
    assert calls == ["barrier"] and writing.exists()
    assert json.loads((folder / ChunkStore.STAMP).read_text()) == {"run": "other"}
    seen = []
    ChunkStore(folder, {"run": "this"}, quiet=True,
               barrier=lambda: seen.append(json.loads((folder / ChunkStore.STAMP).read_text())))
    assert seen == [{"run": "this"}] and not writing.exists()
