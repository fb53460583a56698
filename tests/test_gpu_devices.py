"""Scipion's GPU choice -> torch devices, and several GPUs -> the stage under
torchrun, one process per GPU (no GPU needed: the launch
command, its environment, the config JSON, and a real 2-process CPU run)."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, shared_file
from deephemnma.errors import InputError
from deephemnma.protocols.base import gpu_devices, launch_command, launch_env
from deephemnma.stages import align as align_stage
from deephemnma.stages import landscape as landscape_stage
from deephemnma.stages import train as train_stage
from deephemnma.stages.base import load_config, save_config


def test_one_gpu():
    assert gpu_devices(True, [1], 2) == (["cuda:1"], None)


def test_several_gpus_one_device_each():
    assert gpu_devices(True, [0, 1, 1], 4) == (["cuda:0", "cuda:1"], None)


def test_gpu_requested_but_absent_warns_and_uses_cpu():
    devices, warning = gpu_devices(True, [0], 0)
    assert devices == ["cpu"] and "none is available" in warning


def test_ids_beyond_the_machine_are_dropped_with_a_warning():
    devices, warning = gpu_devices(True, [0, 3], 2)
    assert devices == ["cuda:0"] and "[3]" in warning
    devices, warning = gpu_devices(True, [5], 2)
    assert devices == ["cpu"] and "CPU" in warning


def test_gpu_not_wanted():
    assert gpu_devices(False, [0], 4) == (["cpu"], None)


# --------------------------------------------------------------------------
# several GPUs: the stage under torchrun, one process per GPU
def _env():
    return dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1",
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_launch_command_is_torchrun_of_the_stage_runner():
    argv = launch_command("train", "Runs/1/extra/train_torchrun.json", 4, python="/py")
    assert argv == ["/py", "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "4", "-m", "deephemnma.stages", "train",
                    "Runs/1/extra/train_torchrun.json"]
    assert launch_command("align", "c.json", 2)[0] == sys.executable


def test_launch_env_lists_the_chosen_gpus():
    assert launch_env([0, 2], {}) == {"CUDA_VISIBLE_DEVICES": "0,2"}
    # ids are torch's numbers in this process: mapped through an existing mask
    assert launch_env([0, 2], {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}) == \
        {"CUDA_VISIBLE_DEVICES": "4,6"}


@pytest.mark.parametrize("cfg", [
    train_stage.Config(particles="p.xmd", out="m", mode_list=[7, 8, 11], epochs=3,
                       mahalanobis=3.2, input_size=32, device="cuda"),
    align_stage.Config(particles="p.xmd", modes="ref", structure="r.pdb", out="a.xmd",
                       pixel_size=2.6, pyramid=(32, 64), angular_step=20.0, device="cuda"),
    landscape_stage.Config(particles="p.xmd", out="l", polygon=((0, 0), (1, 0), (1, 2)),
                           components=3)])
def test_config_json_round_trip(tmp_path, cfg):
    path = save_config(cfg, str(tmp_path / "c.json"))
    back = load_config(type(cfg), path)
    assert back == cfg
    assert json.load(open(path))["out"] == cfg.out


def test_config_json_refuses_unknown_fields(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"particles": "p.xmd", "epochz": 3}))
    with pytest.raises(InputError, match="epochz"):
        load_config(train_stage.Config, str(p))
    p.write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        load_config(train_stage.Config, str(p))


def test_stage_runner_bad_input_is_one_line_exit_2(tmp_path):
    path = save_config(align_stage.Config(particles=str(tmp_path / "none.xmd"), modes="m",
                                          structure="s.pdb", out=str(tmp_path / "a.xmd"),
                                          pixel_size=1.0), str(tmp_path / "c.json"))
    r = subprocess.run([sys.executable, "-m", "deephemnma.stages", "align", path],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"deephemnma align: error: --particles: file not found: {tmp_path / 'none.xmd'}"]
    r = subprocess.run([sys.executable, "-m", "deephemnma.stages", "base", path],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a deephemnma stage" in r.stderr


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _protocol(cls, tmp_path, devices):
    """A protocol instance (no project) whose devices are ``devices``, with
    runJob recorded instead of run."""
    prot = cls()
    prot.setWorkingDir(str(tmp_path / "run"))
    os.makedirs(prot._getExtraPath(), exist_ok=True)
    prot._log = logging.getLogger(f"test_gpu_devices.{id(prot)}")
    prot._log.setLevel(logging.INFO)
    prot._records = _Records()
    prot._log.addHandler(prot._records)
    prot._devices = lambda: list(devices)
    prot.jobs = []
    prot.runJob = lambda program, args, **kw: prot.jobs.append((program, list(args), kw))
    return prot


def _align_inputs(tmp_path):
    for name in ("p.xmd", "r.pdb"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "ref").mkdir()
    return align_stage.Config(particles=str(tmp_path / "p.xmd"), modes=str(tmp_path / "ref"),
                              structure=str(tmp_path / "r.pdb"), pixel_size=2.6,
                              out=str(tmp_path / "out" / "a.xmd"), device="cuda:0")


def test_protocol_launches_torchrun_with_several_gpus(tmp_path):
    pytest.importorskip("pwem")
    from deephemnma.protocols import DeepHEMNMAProtAlign
    cfg = _align_inputs(tmp_path)
    prot = _protocol(DeepHEMNMAProtAlign, tmp_path, ["cuda:0", "cuda:2"])
    prot._runStage(align_stage, cfg)
    assert len(prot.jobs) == 1
    program, args, kw = prot.jobs[0]
    path = prot._getExtraPath("align_torchrun.json")
    assert [program] + args == launch_command("align", path, 2)
    assert kw["env"]["CUDA_VISIBLE_DEVICES"] == launch_env([0, 2], os.environ)[
        "CUDA_VISIBLE_DEVICES"]
    # the saved config is the protocol's, on "cuda": process k uses its own GPU
    assert load_config(align_stage.Config, path) == cfg.replace(device="cuda")
    assert any("2 processes under torchrun" in m and "cuda:0, cuda:2" in m
               for m in prot._records.lines), prot._records.lines


def test_protocol_bad_input_fails_before_launching(tmp_path):
    pytest.importorskip("pwem")
    from deephemnma.protocols import DeepHEMNMAProtAlign
    cfg = _align_inputs(tmp_path).replace(particles=str(tmp_path / "missing.xmd"))
    prot = _protocol(DeepHEMNMAProtAlign, tmp_path, ["cuda:0", "cuda:1"])
    # the stage's message, in the form's words
    with pytest.raises(Exception, match=r"deephemnma align: \*Particles\*: file not found"):
        prot._runStage(align_stage, cfg)
    assert prot.jobs == [] and not os.path.exists(prot._getExtraPath("align_torchrun.json"))


def test_protocol_one_device_runs_in_process(tmp_path, monkeypatch):
    pytest.importorskip("pwem")
    import deephemnma.protocols.base as pbase
    from deephemnma.protocols import DeepHEMNMAProtTrain
    ran = []
    monkeypatch.setattr(pbase, "run_stage",
                        lambda stage, cfg, words=None: ran.append((stage, cfg)))
    prot = _protocol(DeepHEMNMAProtTrain, tmp_path, ["cuda:1"])
    cfg = train_stage.Config(particles="p.xmd", out="m", device="cuda:1")
    prot._runStage(train_stage, cfg)
    assert ran == [(train_stage, cfg)] and prot.jobs == []


def test_protocol_log_states_the_device(tmp_path):
    pytest.importorskip("pwem")
    from deephemnma.protocols import DeepHEMNMAProtTrain
    prot = _protocol(DeepHEMNMAProtTrain, tmp_path, [])
    del prot._devices                         # the real one: no GPU wanted -> CPU
    prot.useGpu.set(False)
    import torch
    threads = torch.get_num_threads()
    try:
        assert prot._devices() == ["cpu"]
    finally:
        torch.set_num_threads(threads)       # _devices sets the protocol's thread count
    assert prot._records.lines == ["deephemnma runs on cpu"]


def test_torchrun_two_processes_equal_one(tmp_path):
    """The launch command really runs: align under torchrun with 2 CPU
    processes (gloo, one chunk each) gives the result of one process (one
    thread each: the same numbers)."""
    from deephemnma.io.metadata import read_metadata
    from deephemnma.stages import nma, simulate
    ak = str(shared_file("continuousflex", "AK.pdb"))
    ref = str(tmp_path / "ref")
    nma.run(nma.Config(structure=ak, out=ref, n_modes=10), progress=False)
    simulate.run(simulate.Config(structure=ak, modes=ref, out=str(tmp_path / "A"), n=4,
                                 box=32, pixel_size=2.6, snr=1.0, seed=1), progress=False)
    cfg = align_stage.Config(particles=str(tmp_path / "A" / "particles.xmd"), modes=ref,
                             structure=os.path.join(ref, "reference.pdb"), pixel_size=2.6,
                             out=str(tmp_path / "one" / "a.xmd"), angular_step=30.0,
                             coarse_iters=3, fine_iters=2, chunk=2, device="cpu")
    os.makedirs(tmp_path / "one")
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # as each torchrun process (OMP_NUM_THREADS=1)
    try:
        align_stage.run(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    two = cfg.replace(out=str(tmp_path / "two" / "a.xmd"))
    os.makedirs(tmp_path / "two")
    path = save_config(two, str(tmp_path / "align.json"))
    r = subprocess.run(launch_command("align", path, 2), env=_env(), capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("aligned 4 images") == 1       # process 0 prints the summary
    a, b = read_metadata(cfg.out), read_metadata(two.out)
    assert a["itemId"].tolist() == b["itemId"].tolist()
    for c in ("angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "nmaDisplacements",
              "cost"):
        assert np.array_equal(a[c], b[c]), (c, np.abs(a[c] - b[c]).max())
