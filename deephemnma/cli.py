"""``deephemnma <command> ...``: the DeepHEMNMA workflow outside Scipion.

Commands are discovered from :mod:`deephemnma.commands` (one module each, with
``add_args(parser)`` and ``main(args)``). Bad input (:class:`InputError`, missing
files) prints one clear line and exits with code 2."""
import argparse
import importlib
import pkgutil
import sys
import warnings

from . import passive_openmp

passive_openmp()        # before any command module imports torch

from . import commands as _commands  # noqa: E402
from .errors import USER_ERRORS, one_line
from .utils import end_progress_lines
from .version import __version__


def _command_modules():
    names = sorted(m.name for m in pkgutil.iter_modules(_commands.__path__)
                   if not m.name.startswith("_"))
    return [(n.replace("_", "-"), importlib.import_module(f"{_commands.__name__}.{n}"))
            for n in names]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="deephemnma", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for name, module in _command_modules():
        doc = (module.__doc__ or name).strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_args(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv=None):
    from .stages.base import invoked_by
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")      # library warnings are not for the user
    try:
        with invoked_by(["deephemnma", *argv]):      # the command in the run records
            result = args._main(args)
    except USER_ERRORS as e:
        end_progress_lines()
        print(one_line(args.command, e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        end_progress_lines()
        print(f"deephemnma {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
