"""Shared pieces of the DeepHEMNMA protocols (form helpers, device choice)."""
import os
import subprocess
import sys

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol


class DeepHEMNMABase(EMProtocol):
    """Common GPU/threads parameters; the numerics are in deephemnma.core."""
    _label = None

    @classmethod
    def _addComputeParams(cls, form, threads=2):
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU",
                       help="Run on the CUDA GPU(s) below. When none is available, the run "
                            "runs on the CPU with a warning in the log; the log states "
                            "the device(s) used.")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0", label="GPU ids",
                       help="CUDA device indices, e.g. 0 or 0,1 or 0-3. One GPU: the run "
                            "uses cuda:N. Several: training and HEMNMA alignment run "
                            "under torchrun, one process per GPU (the other protocols use "
                            "the first). Ids the machine does not have are dropped with a "
                            "warning.")
        form.addParallelSection(threads=threads, mpi=0)

    def _devices(self):
        """The torch devices this run uses (logged once)."""
        import torch
        use = bool(self.useGpu.get())
        devices, warning = gpu_devices(use, self.getGpuList() if use else [],
                                       torch.cuda.device_count() if use else 0)
        if getattr(self, "_log", None) is not None and not getattr(self, "_devicesLogged", False):
            self._devicesLogged = True   # log once, when running (not in form validation)
            if warning:
                self.warning(warning)
            self.info(f"deephemnma runs on {', '.join(devices)}")
        if devices == ["cpu"]:
            torch.set_num_threads(max(1, self.numberOfThreads.get()))
        return devices

    def _device(self):
        """The first device (one-process stages)."""
        return self._devices()[0]

    def _runStage(self, stage, cfg):
        """Run a stage that supports torchrun (train, align) on the devices of
        :meth:`_devices`: in this process on one device; with several GPUs,
        one process per GPU under torchrun (:meth:`_launchStage`)."""
        cuda = [d for d in self._devices() if d.startswith("cuda:")]
        if len(cuda) > 1:
            return self._launchStage(stage, cfg.replace(device="cuda"), cuda)
        return run_stage(stage, cfg)

    def _launchStage(self, stage, cfg, devices):
        """Run ``stage`` on ``cfg`` under torchrun, one process per device of
        ``devices`` (``cuda:i``): the config is validated here (a bad input
        fails the step with the stage's own message), saved as
        ``extra/<stage>_torchrun.json`` and run by ``python -m
        deephemnma.stages`` (:func:`launch_command`) with CUDA_VISIBLE_DEVICES
        set to the chosen GPUs (:func:`launch_env`); its output goes to the
        run's log. Returns the path of the saved config."""
        from ..errors import InputError
        from ..stages.base import save_config
        name = stage.__name__.rsplit(".", 1)[-1]
        try:
            cfg.validate()
        except (InputError, FileNotFoundError) as e:
            raise Exception(f"deephemnma {name}: {e}") from None
        path = save_config(cfg, self._extra(f"{name}_torchrun.json"))
        ids = [int(d.split(":", 1)[1]) for d in devices]
        argv = launch_command(name, path, len(ids))
        import pyworkflow.utils as pwutils
        env = pwutils.Environ(os.environ)      # the plugin adds no variables
        env.update(launch_env(ids, os.environ))
        self.info(f"deephemnma {name}: {len(ids)} processes under torchrun, one per GPU "
                  f"({', '.join(devices)}; CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})")
        try:
            self.runJob(argv[0], argv[1:], env=env, numberOfMpi=1)
        except subprocess.CalledProcessError as e:
            raise Exception(f"deephemnma {name} under torchrun failed (exit status "
                            f"{e.returncode}): the reason is in the log above") from None
        return path

    def _extra(self, *p):
        return self._getExtraPath(*p)

    def _modesFolder(self, modes_set, structure_file=None):
        """Writes the modes of a SetOfNormalModes (ours, ContinuousFlex's, or a
        subset of either: only its items) in ContinuousFlex's layout
        (modes.xmd + modes/vec.N) under extra/input_modes, and returns that
        folder for the stages."""
        from ..core.nma import write_continuousflex
        from .convert import modes_from_set
        folder = self._extra("input_modes")
        if not os.path.exists(os.path.join(folder, "modes.xmd")):
            coords = _mode_atoms(modes_set, structure_file)
            write_continuousflex(modes_from_set(modes_set, coords), folder)
        return folder

    def _citations(self):
        return ["Hamitouche2022", "Jin2014", "Harastani2020"]

    def _validateParticlesNma(self, parts, modes=None):
        """Errors for particle sets lacking alignment or NMA amplitudes."""
        from ..core.nma import is_rigid, mode_number
        errors = []
        if parts is None:
            return ["no input particles"]
        if parts.getSize() == 0:
            errors.append("the input particle set is empty")
            return errors
        first = parts.getFirstItem()
        if not hasattr(first, "_xmipp_nmaDisplacements"):
            errors.append("the particles carry no normal-mode amplitudes "
                          "(_xmipp_nmaDisplacements): run HEMNMA alignment first")
        if not parts.hasAlignmentProj():
            errors.append("the particles have no projection alignment (angles and shifts)")
        if modes is not None and hasattr(first, "_xmipp_nmaDisplacements"):
            k = len(first._xmipp_nmaDisplacements)
            nums = [mode_number(m.getModeFile()) for m in modes.iterItems()]
            flex = [n for n in nums if n is None or not is_rigid(n)]
            if k > len(flex):
                errors.append(f"the particles have {k} amplitudes but the normal modes set "
                              f"has only {len(flex)} flexible modes")
        return errors


def _mode_atoms(modes_set, structure_file=None):
    """Coordinates of the atoms the modes move: ours keep them beside the
    modes (reference_coords.txt); otherwise the atoms of the reference
    structure in the first selection whose atom count matches."""
    import numpy as np
    from ..core.structure import read_structure
    from ..errors import InputError
    first = modes_set.getFirstItem().getModeFile()
    n = len(np.loadtxt(first).reshape(-1, 3))
    ours = os.path.join(os.path.dirname(os.path.dirname(first)), "reference_coords.txt")
    if os.path.exists(ours):
        c = np.loadtxt(ours).reshape(-1, 3)
        if len(c) == n:
            return c
    pdb = structure_file or modes_set.getPdb().getFileName()
    counts = []
    for sel in ("heavy", "all", "ca", "ca+p"):
        c = read_structure(pdb, sel).coords
        if len(c) == n:
            return c
        counts.append(f"{sel}: {len(c)}")
    raise InputError(f"the normal modes move {n} atoms but no selection of {pdb} has that "
                     f"many ({', '.join(counts)})")


def run_stage(stage, cfg):
    """Run a :mod:`deephemnma.stages` stage; bad input becomes a protocol error
    carrying the stage's own message (the one the terminal shows). The
    summary lines go to the protocol's log."""
    from ..errors import InputError
    name = stage.__name__.rsplit(".", 1)[-1]
    try:
        out = stage.run(cfg)
    except (InputError, FileNotFoundError) as e:
        raise Exception(f"deephemnma {name}: {e}") from None
    for line in getattr(stage, "summary", lambda o, c: [])(out, cfg):
        print(line, flush=True)
    return out


def config_errors(make_config, check="validate_options"):
    """Validation messages of a stage config for a form's ``_validate``: the
    config's option checks (the files of upstream protocols may not exist yet
    when the form is validated)."""
    from ..errors import InputError
    try:
        cfg = make_config()
        getattr(cfg, check)()
    except InputError as e:
        return [str(e)]
    return []


def gpu_devices(use_gpu, gpu_list, cuda_count):
    """Scipion's GPU choice -> torch device names, and a warning (or None).

    ``gpu_list``: the protocol's ``getGpuList()`` (ints); one id -> ['cuda:i'],
    several -> one device each; GPUs requested but absent -> ['cpu'] and a
    warning; ids beyond the machine's GPUs are dropped with a warning."""
    if not use_gpu:
        return ["cpu"], None
    if cuda_count == 0:
        return ["cpu"], "a GPU was requested but none is available: running on the CPU"
    ids = [int(i) for i in gpu_list] or [0]
    ok = [i for i in dict.fromkeys(ids) if 0 <= i < cuda_count]
    bad = [i for i in ids if i not in ok]
    warning = None
    if bad:
        warning = (f"GPU id(s) {bad} not on this machine ({cuda_count} GPU(s)): "
                   + ("using " + ", ".join(f"cuda:{i}" for i in ok) if ok else
                      "running on the CPU"))
    if not ok:
        return ["cpu"], warning
    return [f"cuda:{i}" for i in ok], warning


def launch_command(stage_name, config_json, n_procs, python=None):
    """The command (argv list) that runs the stage ``stage_name`` on the
    config saved in ``config_json`` under torchrun with ``n_procs`` processes
    on this machine: ``python -m torch.distributed.run --standalone
    --nproc_per_node N -m deephemnma.stages STAGE CONFIG.json``."""
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(int(n_procs)), "-m", "deephemnma.stages",
            str(stage_name), str(config_json)]


def launch_env(gpu_ids, environ=None):
    """Environment variables for a torchrun launch on the GPUs ``gpu_ids``
    (indices as torch numbers them in this process): CUDA_VISIBLE_DEVICES
    lists them, mapped through an existing CUDA_VISIBLE_DEVICES of
    ``environ`` (a queue system's), so process k sees its GPU as cuda:k."""
    visible = (environ or {}).get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [str(int(i)) for i in gpu_ids]
    if visible:
        physical = [v.strip() for v in visible.split(",") if v.strip()]
        ids = [physical[int(i)] if int(i) < len(physical) else i for i in ids]
    return {"CUDA_VISIBLE_DEVICES": ",".join(ids)}
