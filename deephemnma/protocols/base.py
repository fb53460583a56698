"""Shared pieces of the DeepHEMNMA protocols (form helpers, device choice,
messages in the words of the forms)."""
import os
import re
import subprocess
import sys

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.constants import BETA
from pyworkflow.exceptions import PyworkflowException


class DeepHEMNMAError(PyworkflowException):
    """A DeepHEMNMA protocol cannot run on its input. The message speaks of
    the form's fields; pyworkflow fails the step with it (shown in red in the
    log, without a traceback)."""


def flag(field):
    """The command-line option of a stage config field: ``--field-name``."""
    return "--" + field.replace("_", "-")


#: a command-line option in a message ("--pixel-size", "-n/--number")
_OPTION = re.compile(r"(?<![\w-])(?:-[A-Za-z]/)?--[a-z][a-z0-9-]*")


class DeepHEMNMABase(EMProtocol):
    """Common GPU/threads parameters and the translation of the stages'
    messages into the form's words; the numerics are in deephemnma.core."""
    _label = None
    _devStatus = BETA

    # ---- the form's words for the stages' options ---------------------------
    #: stage config field -> the form parameter that sets it (messages name its
    #: label) or the words naming a value the protocol fills in itself
    _formFields = {}
    #: config field -> its command-line option where that is not ``--field-name``
    _flagNames = {}
    #: an option followed by words (e.g. "--split axis") -> form parameter or words
    _formPhrases = {}

    def _fieldWords(self, target):
        """``*Label*`` of the form parameter ``target``, else ``target`` itself."""
        param = self.getDefinition().getParam(target)
        return f"*{param.label.get()}*" if param is not None else target

    def _formWords(self):
        """{option text in the stages' messages: the form's words for it}."""
        words = {self._flagNames.get(f, flag(f)): self._fieldWords(t)
                 for f, t in self._formFields.items()}
        words.update((text, self._fieldWords(t)) for text, t in self._formPhrases.items())
        return words

    def _formMessage(self, message):
        """A stage's message with its command-line options replaced by the
        form's words: the label of the form parameter that sets the value
        (``*Label*``, as pyworkflow names fields), or words for a value the
        protocol fills in. An option this protocol does not set reads as
        words ("--max-shift" -> "max shift")."""
        words = self._formWords()
        texts = sorted(words, key=len, reverse=True)
        if texts:
            known = re.compile(r"(?<![\w-])(?:-[A-Za-z]/)?(%s)(?![\w-])"
                               % "|".join(re.escape(t) for t in texts))
            message = known.sub(lambda m: words[m.group(1)], message)
        return _OPTION.sub(lambda m: m.group(0).split("/")[-1][2:].replace("-", " "), message)

    def _failingLabels(self):
        """Labels of the parameters whose own validators (``validators=``)
        refuse their value: pyworkflow reports those already."""
        labels = set()
        for name, param in self.getDefinition().iterParams():
            attr = getattr(self, name, None)
            if attr is None or attr.isPointer() or not getattr(param, "validators", None):
                continue
            try:
                bad = self.evalParamCondition(name) and param.validate(attr.get())
            except TypeError:            # an empty value
                bad = True
            if bad:
                labels.add(param.label.get())
        return labels

    def _configErrors(self, make_config, check="validate_options"):
        """Every problem the stage config made by ``make_config`` finds in the
        form's values (its ``check``: the option checks, as the files of
        upstream protocols may not exist yet), in the form's words; those of a
        field whose own validator already complains are left to pyworkflow."""
        from ..errors import InputError
        from ..stages.base import collect_problems
        with collect_problems() as problems:
            try:
                getattr(make_config(), check)()
            except InputError as e:
                problems.append(str(e))
            except (TypeError, ValueError):
                if not problems:       # not a consequence of a value recorded as bad
                    raise
        failing = self._failingLabels()
        messages = [self._formMessage(p) for p in dict.fromkeys(problems)]
        return [m for m in messages if not any(f"*{label}*" in m for label in failing)]

    def _runHere(self, stage, cfg):
        """Run ``stage`` on ``cfg`` in this process (:func:`run_stage`), its
        messages in the form's words; the stage's run record names this
        protocol run as its command."""
        from ..stages.base import invoked_by
        with invoked_by(self._runDescription()):
            return run_stage(stage, cfg, self._formMessage)

    def _runDescription(self):
        """``Scipion DeepHEMNMAProtAlign run 12 'label' (project NAME)``: the
        command of this run's stage records."""
        project = self.getProject()
        where = f" (project {project.getShortName()})" if project is not None else ""
        return (f"Scipion {self.getClassName()} run {self.getObjId()} "
                f"'{self.getRunName()}'{where}")

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
        return self._runHere(stage, cfg)

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
            raise DeepHEMNMAError(f"deephemnma {name}: {self._formMessage(str(e))}") from None
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
            raise DeepHEMNMAError(f"deephemnma {name} under torchrun failed (exit status "
                                  f"{e.returncode}): the reason is in the log above") from None
        return path

    def _extra(self, *p):
        return self._getExtraPath(*p)

    def _projectFolder(self):
        """The project's folder (Scipion runs the steps there)."""
        project = self.getProject()
        return project.getPath() if project is not None else os.getcwd()

    def _writeParticles(self, parts, name, need_alignment=False):
        """Write the SetOfParticles ``parts`` as ``extra/<name>`` for a stage
        (:func:`convert.particles_to_table`): its image references are
        relative to that file, so a moved project still finds the images.
        Returns the file's path."""
        from ..io.metadata import write_xmd
        from .convert import particles_to_table
        path = self._extra(name)
        write_xmd(path, particles_to_table(parts, need_alignment, self._projectFolder()))
        return path

    def _logCtf(self, parts, what, flipped):
        """Say in the log whether ``what`` (e.g. "HEMNMA alignment") corrects
        for the CTF of the particles ``parts``: only when they have one;
        ``flipped``: the images are phase-flipped already."""
        if not parts.hasCTF():
            self.info(f"The particles have no CTF: {what} applies no CTF correction.")
        elif flipped:
            self.info(f"The particles have a CTF and their images are phase-flipped already: "
                      f"{what} does not flip them again.")
        else:
            self.info(f"The particles have a CTF: {what} phase-flips their images with it.")

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
    raise DeepHEMNMAError(f"the normal modes move {n} atoms but no selection of {pdb} has "
                          f"that many ({', '.join(counts)})")


def run_stage(stage, cfg, words=None):
    """Run a :mod:`deephemnma.stages` stage; bad input becomes a
    :class:`DeepHEMNMAError` carrying the stage's own message, its options
    put in the form's words by ``words`` (a protocol's ``_formMessage``). The
    summary lines (in those words too) go to the protocol's log."""
    from ..errors import InputError
    words = words or (lambda message: message)
    name = stage.__name__.rsplit(".", 1)[-1]
    try:
        out = stage.run(cfg)
    except (InputError, FileNotFoundError) as e:
        raise DeepHEMNMAError(f"deephemnma {name}: {words(str(e))}") from None
    for line in getattr(stage, "summary", lambda o, c: [])(out, cfg):
        print(words(line), flush=True)
    return out


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
