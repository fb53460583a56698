"""Run one stage on a config saved as JSON: the entry point of a stage in
another process, e.g. one process per GPU under torchrun::

    python -m deephemnma.stages train run/train_torchrun.json
    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        -m deephemnma.stages train run/train_torchrun.json

The JSON holds the fields of the stage's ``Config`` (written by
:func:`deephemnma.stages.base.save_config`), so there is no second list of
options here. Process 0 prints the stage's summary lines. Bad input prints
one line (``deephemnma STAGE: error: ...``) on stderr and exits with 2.
"""
import importlib
import sys

from .. import passive_openmp
from ..errors import USER_ERRORS, InputError, one_line

passive_openmp()

USAGE = "usage: python -m deephemnma.stages STAGE CONFIG.json"
#: modules of deephemnma.stages that are not stages
NOT_STAGES = ("base", "reference")


def stage_module(name):
    """The stage module ``deephemnma.stages.<name>`` (InputError for a name
    that is not a stage)."""
    if not name.isidentifier() or name.startswith("_") or name in NOT_STAGES:
        raise InputError(f"{name!r} is not a deephemnma stage")
    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError:
        raise InputError(f"{name!r} is not a deephemnma stage") from None
    if not (hasattr(module, "Config") and hasattr(module, "run")):
        raise InputError(f"{name!r} is not a deephemnma stage")
    return module


def main(argv=None):
    """Run ``STAGE`` on ``CONFIG.json``; returns the exit code."""
    import os
    from .base import load_config
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    name, path = argv
    try:
        stage = stage_module(name)
        cfg = load_config(stage.Config, path)
        out = stage.run(cfg)
    except USER_ERRORS as e:
        print(one_line(name, e), file=sys.stderr, flush=True)
        return 2
    finally:
        _end_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        for line in getattr(stage, "summary", lambda o, c: [])(out, cfg):
            print(line, flush=True)
    return 0


def _end_process_group():
    """Close the process group a stage started under torchrun (if any)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
