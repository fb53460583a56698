"""What every stage shares: the config base class and its checks, cleaning up
after errors, run stamps and the resumable chunk store, and row checks.

A stage module (``deephemnma/stages/<name>.py``) defines

* ``Config``: a dataclass whose fields and defaults are the stage's options
  (the command line and the Scipion form read their defaults from it), with
  ``validate()`` raising :class:`InputError` for every impossible value before
  anything is written;
* ``Outputs``: the stage's file names, derived from the output path given in the
  config (the only place where they are spelled);
* ``run(config, progress=True) -> Outputs`` (plus a result summary on it),
  decorated with :func:`recorded`: a run that ends writes its run record
  (``Outputs.run_record``: the command, the config, the version, the times,
  the status) beside its outputs.

Commands are argparse -> Config -> run -> print; protocols are form -> Config
-> run. Neither holds rules of its own.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import functools
import glob
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TextIO, Union

import numpy as np

from ..errors import USER_ERRORS, InputError
from ..utils import atomic_path

if TYPE_CHECKING:
    from ..io.metadata import Table

PathLike = Union[str, os.PathLike]     # a path as str or pathlib.Path

__all__ = ["StageConfig", "InputError", "need", "collect_problems", "positive", "at_least", "fraction",
           "same_file", "is_whole", "whole_number", "existing", "output_path",
           "cleanup_on_error", "file_digest", "table_digest", "ChunkStore", "finite_rows",
           "bad_images", "usable_rows", "Rejected", "say", "run_record", "recorded",
           "invoked_by", "record_beside", "record_property"]


def say(message: str, stream: TextIO = None) -> None:
    """One line for the user (stdout), flushed."""
    print(message, file=stream or sys.stdout, flush=True)


# --------------------------------------------------------------------------
# configs
class StageConfig:
    """Mix-in for stage configs (dataclasses). ``validate()`` returns self."""

    def validate(self) -> StageConfig:
        return self

    def replace(self, **changes) -> StageConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: the lists that :func:`collect_problems` blocks are filling (innermost last)
_COLLECTING = contextvars.ContextVar("deephemnma_collecting", default=())


@contextlib.contextmanager
def collect_problems():
    """Within this block :func:`need` (and :func:`positive`, :func:`at_least`,
    :func:`fraction`, which call it) records its message in the list the
    block yields and goes on, so that every impossible value of a config is
    reported at once (a Scipion form). An InputError raised otherwise still
    ends the block. Outside such a block the first problem raises."""
    problems = []
    token = _COLLECTING.set(_COLLECTING.get() + (problems,))
    try:
        yield problems
    finally:
        _COLLECTING.reset(token)


def need(condition, message):
    """Raise InputError(message) unless ``condition`` (within
    :func:`collect_problems`: record the message and go on)."""
    if not condition:
        collecting = _COLLECTING.get()
        if collecting:
            collecting[-1].append(message)
            return
        raise InputError(message)


def _finite_number(value):
    try:
        return np.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def positive(name, value):
    need(_finite_number(value) and value > 0, f"{name} must be positive, got {value}")


def at_least(name, value, low):
    need(_finite_number(value) and value >= low, f"{name} must be >= {low}, got {value}")


def fraction(name, value, low=0.0, high=1.0, high_open=True):
    ok = _finite_number(value) and value >= low and (value < high if high_open else
                                                     value <= high)
    need(ok, f"{name} must be in [{low}, {high}{')' if high_open else ']'}, got {value}")


def existing(name: str, path: PathLike, what: str = "file") -> None:
    """The path exists (a file, or a folder when ``what == 'folder'``)."""
    need(path not in (None, ""), f"{name} is required")
    if not os.path.exists(path):
        raise InputError(f"{name}: {what} not found: {path}")
    if what == "folder":
        need(os.path.isdir(path), f"{name}: not a folder: {path}")
    elif what != "path":
        need(os.path.isfile(path), f"{name}: not a file: {path}")
        need(os.path.getsize(path) > 0, f"{name}: empty file: {path}")


def same_file(a: PathLike, b: PathLike) -> bool:
    """``a`` and ``b`` name the same file (links and relative paths resolved)."""
    return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def is_whole(value) -> bool:
    """``value`` is an integer (Python or numpy; a bool is not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def whole_number(name: str, value) -> None:
    """Raise InputError unless ``value`` is an integer (:func:`is_whole`)."""
    need(is_whole(value), f"{name} must be a whole number, got {value}")


def output_path(name: str, path: PathLike, inputs: Iterable = (), folder: bool = False) -> None:
    """The output path is given, is not one of the inputs, and (for a file) is
    not an existing folder."""
    need(path not in (None, ""), f"{name} is required")
    for i in inputs:
        if i not in (None, "") and same_file(path, i):
            raise InputError(f"{name} {path} is also an input: choose another output")
    if not folder:
        need(not os.path.isdir(path), f"{name}: {path} is a folder; give a file name")
    else:
        need(not os.path.isfile(path), f"{name}: {path} is a file; give a folder")


@contextlib.contextmanager
def cleanup_on_error(*paths: PathLike) -> Iterator[None]:
    """Remove those of ``paths`` (files or folders) that did not exist before
    the block when the block raises; an interruption (Ctrl-C, kill) keeps them,
    so that a resumable run can continue."""
    existed = {p: os.path.lexists(p) for p in paths if p}
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException:
        for p, was in existed.items():
            if not was and os.path.lexists(p):
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.remove(p)
        raise


# --------------------------------------------------------------------------
# run records
_CALLER = contextvars.ContextVar("deephemnma_caller", default=None)


@contextlib.contextmanager
def invoked_by(description: str | list) -> Iterator[None]:
    """Stage runs inside the block record ``description`` (e.g. a Scipion
    protocol and its run) as their command, instead of the process's
    command line (sys.argv)."""
    token = _CALLER.set(description)
    try:
        yield
    finally:
        _CALLER.reset(token)


def record_beside(path: PathLike | None) -> str | None:
    """The run record of a stage whose output is the file ``path``:
    ``OUT.run.json`` for ``OUT.xmd`` (None for no path)."""
    if path in (None, ""):
        return None
    return os.path.splitext(os.fspath(path))[0] + ".run.json"


def record_property(*attrs: str, folder: bool = False) -> property:
    """An ``Outputs.run_record`` property: the run record beside the file in
    the first of ``attrs`` that is set (:func:`record_beside`), or, with
    ``folder``, ``run.json`` in the folder of ``attrs[0]``."""
    def run_record(self):
        path = next((getattr(self, a) for a in attrs if getattr(self, a)), None)
        if folder:
            return os.path.join(os.fspath(path), "run.json")
        return record_beside(path)
    run_record.__doc__ = ("The run record (:func:`deephemnma.stages.base.run_record`): "
                          "command, config, version, times, status.")
    return property(run_record)


def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


@contextlib.contextmanager
def run_record(path: PathLike | Callable[[], str] | None, cfg: StageConfig,
               stage: str = None) -> Iterator[None]:
    """Write the run record of the block, a JSON file at ``path`` (or
    ``path()``, resolved when the block ends; None: no record): ``stage``,
    ``command`` (sys.argv, or the description of :func:`invoked_by`), ``cwd``,
    ``config`` (``cfg``'s fields), ``version``, ``started``, ``ended``
    (ISO 8601), ``seconds`` and ``status``: ``finished``, ``interrupted``
    (Ctrl-C) or ``failed`` (with ``error``). Input refused (the user's errors,
    :data:`deephemnma.errors.USER_ERRORS`) writes nothing, as such a run
    writes nothing else; a failure writes its record only where the output's
    folder exists. Under torchrun only process 0 writes it."""
    from ..version import __version__
    started, t0 = _now(), time.perf_counter()
    command = _CALLER.get()
    status, error = None, None
    try:
        yield
        status = "finished"
    except USER_ERRORS:
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {' '.join(str(e).split())}"
        raise
    finally:
        if status is not None and int(os.environ.get("RANK", "0") or 0) == 0:
            record = {"stage": stage, "command": command if command is not None
                      else list(sys.argv), "cwd": os.getcwd(),
                      "config": cfg.to_dict() if hasattr(cfg, "to_dict")
                      else dataclasses.asdict(cfg),
                      "version": __version__, "started": started, "ended": _now(),
                      "seconds": round(time.perf_counter() - t0, 3), "status": status}
            if error is not None:
                record["error"] = error
            if status == "finished":
                _write_record(path, record)
            else:
                try:                     # never hide the run's own error
                    _write_record(path, record, only_into_existing=True)
                except Exception:  # noqa: BLE001
                    pass


def _write_record(path, record, only_into_existing=False):
    path = path() if callable(path) else path
    if path in (None, ""):
        return
    if only_into_existing and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(record, f, indent=1, default=str)
        f.write("\n")


def recorded(outputs: Callable) -> Callable:
    """Decorator of a stage's ``run(cfg, ...)``: the run writes its record
    (:func:`run_record`) at ``outputs(cfg).run_record``, ``outputs`` giving
    the stage's :class:`Outputs` of a config (the Outputs own the name).
    ``run.record_path(cfg)`` is that path."""
    def wrap(run):
        stage = run.__module__.rsplit(".", 1)[-1]

        def record_path(cfg):
            return outputs(cfg).run_record

        @functools.wraps(run)
        def recorded_run(cfg, *args, **kwargs):
            with run_record(lambda: record_path(cfg), cfg, stage):
                return run(cfg, *args, **kwargs)
        recorded_run.record_path = record_path
        return recorded_run
    return wrap


# --------------------------------------------------------------------------
# identity of inputs
def file_digest(path: PathLike, block: int = 1 << 20) -> str:
    """sha256 of a file's content (hex, first 16 characters)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(block), b""):
            h.update(b)
    return h.hexdigest()[:16]


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's values (hex, first 16 characters)."""
    a = np.ascontiguousarray(array)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode()
                          + a.tobytes()).hexdigest()[:16]


def table_digest(table: Table) -> str:
    """sha256 of a Table's rows (every column, in order), the image references
    resolved to absolute paths: the identity of the rows a run uses."""
    h = hashlib.sha256()
    if "image" in table and table.root is not None:
        table = table.rebased(None, absolute=True)
    for name, col in table.items():
        h.update(name.encode())
        a = np.asarray(col)
        if a.dtype == object:
            h.update("\0".join(str(v) for v in a.ravel()).encode())
        else:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------
# resumable chunked work
class ChunkStore:
    """A folder of finished chunks (``OUT.parts``) guarded by a run stamp.

    The stamp is a dict naming everything that changes the results: the input
    rows' digest, the options, the model's digest, the chunk size. A folder
    left by a run with another stamp is removed (one line says so): a resumed
    run never mixes inputs. Each chunk is written atomically (temporary file,
    then rename), so a kill at any moment leaves only whole chunks; stale
    temporary files of a killed run are removed when the store opens.

    Under torchrun every process opens the store: only the ``primary`` one
    (rank 0) checks the stamp, clears the folder and writes the stamp; the
    others wait at ``barrier`` (called by all, after that) so that none of
    them writes a chunk into a folder being cleared."""

    STAMP = "stamp.json"

    def __init__(self, folder, stamp, label="", quiet=False, primary=True, barrier=None):
        self.folder = os.fspath(folder)
        self.stamp = json.loads(json.dumps(stamp, sort_keys=True, default=str))
        self.resumed = 0
        if primary:
            self._prepare(label, quiet)
        if barrier is not None:
            barrier()

    def _prepare(self, label, quiet):
        """Clear a folder of another stamp or a killed run's temporaries,
        then write this run's stamp."""
        if os.path.isdir(self.folder):
            old = self._read_stamp()
            if old != self.stamp:
                if not quiet:
                    say(f"{label}: {self.folder} holds work of another input or other "
                        "options; starting afresh", sys.stderr)
                shutil.rmtree(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        for tmp in glob.glob(os.path.join(self.folder, ".*.tmp*")):
            os.remove(tmp)
        with atomic_path(os.path.join(self.folder, self.STAMP)) as tmp, open(tmp, "w") as f:
            json.dump(self.stamp, f, sort_keys=True)

    def _read_stamp(self):
        try:
            with open(os.path.join(self.folder, self.STAMP)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def path(self, k: int, ext: str) -> str:
        return os.path.join(self.folder, f"{k:09d}{ext}")

    def done(self, k: int, ext: str) -> bool:
        return os.path.exists(self.path(k, ext))

    def save_npz(self, k: int, **arrays: np.ndarray) -> None:
        with atomic_path(self.path(k, ".npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def load_npz(self, k: int) -> dict[str, np.ndarray]:
        with np.load(self.path(k, ".npz"), allow_pickle=False) as z:
            return {name: z[name] for name in z.files}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------
# rows that cannot be used
ROW_NUMBERS = ("angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "nmaDisplacements",
               "ctfDefocusU", "ctfDefocusV", "ctfDefocusAngle", "ctfVoltage",
               "ctfSphericalAberration", "ctfQ0", "ctfPhaseShift")


def finite_rows(table: Table, columns: Iterable[str] = ROW_NUMBERS) -> np.ndarray:
    """Boolean mask of the rows whose values in ``columns`` (those present) are
    all finite numbers."""
    ok = np.ones(len(table), bool)
    for c in columns:
        if c not in table:
            continue
        a = np.asarray(table[c])
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            a = np.array([_finite_number(v) for v in a.ravel()]).reshape(a.shape)
            ok &= a.reshape(len(table), -1).all(1)
            continue
        ok &= np.isfinite(a.reshape(len(table), -1)).all(1)
    return ok


def bad_images(images: np.ndarray) -> np.ndarray:
    """Boolean mask of unusable images: a non-finite pixel, or constant."""
    if not len(images):
        return np.zeros(0, bool)
    flat = np.asarray(images).reshape(len(images), -1)
    bad = ~np.isfinite(flat).all(1)
    with np.errstate(invalid="ignore"):
        bad |= ~(np.nanstd(np.where(np.isfinite(flat), flat, 0), axis=1) > 0)
    return bad


ROW = "_row"   # private column: a row's position in the input (never written)


def numbered(table: Table, start: int = 0) -> Table:
    """A copy of ``table`` with its rows' positions in the column ROW."""
    t = table.copy()
    t[ROW] = np.arange(start, start + len(t))
    return t


def public(table: Table) -> Table:
    """``table`` without private columns (names starting with '_')."""
    t = table.copy()
    for c in [c for c in t.columns if c.startswith("_")]:
        del t[c]
    return t


class Rejected:
    """Rows left out of a run, with the reason; written as an .xmd beside the
    output (``reason`` column) and counted in the summary."""

    def __init__(self):
        self.tables = []

    def add(self, table: Table, mask: np.ndarray, reason: str) -> None:
        mask = np.asarray(mask, bool)
        if mask.any():
            t = table.subset(mask)
            t["rejectReason"] = np.full(int(mask.sum()), reason, dtype=object)
            self.tables.append(t)

    def __len__(self):
        return sum(len(t) for t in self.tables)

    def write(self, path: PathLike) -> str | None:
        """Write the rejected rows to ``path`` (removes a stale one when none)."""
        from ..io.metadata import Table, write_xmd
        if not len(self):
            if os.path.exists(path):
                os.remove(path)
            return None
        write_xmd(path, public(Table.concatenate(self.tables)))
        return path

    def summary(self) -> str:
        from collections import Counter
        c = Counter()
        for t in self.tables:
            c.update(t["rejectReason"].tolist())
        return ", ".join(f"{n} {r}" for r, n in c.items())


def usable_rows(table: Table, load: Callable, rejected: Rejected,
                check_rows: Callable = finite_rows) -> tuple[Table, np.ndarray | None]:
    """The rows of ``table`` that a run can use, and their images: rows with a
    non-finite value (``check_rows(table)`` False) and then rows whose image is
    unusable (:func:`bad_images`) go to ``rejected`` with the reason.
    ``load(table) -> images`` (n, y, x) is called only when rows are left.
    Returns (Table, images or None when no row is left)."""
    ok = check_rows(table)
    rejected.add(table, ~ok, "non-finite value")
    table = table.subset(ok)
    if not len(table):
        return table, None
    images = load(table)
    bad = bad_images(images)
    rejected.add(table, bad, "unusable image (NaN/inf or constant)")
    if bad.any():
        table, images = table.subset(~bad), images[~bad]
    return table, images


def accepted_chunks(tables: Iterable[Table], chunk: int, load: Callable, rejected: Rejected,
                    check_rows: Callable = finite_rows) -> Iterator[tuple[int, Table, np.ndarray]]:
    """Group the usable rows of a stream of Tables into chunks of exactly
    ``chunk`` rows (the last may be shorter): the chunks, and so every batch
    within them, are those of a run on the input without its unusable rows, so
    one bad row changes no other row's result.

    ``load(table) -> images`` (n, y, x). Rows with a non-finite value
    (:func:`finite_rows`) or an unusable image (:func:`bad_images`) go to
    ``rejected``. Yields (k, Table, images)."""
    from ..io.metadata import Table
    buf_t, buf_i, k = [], [], 0
    have = 0
    for t in tables:
        t, imgs = usable_rows(t, load, rejected, check_rows)
        if not len(t):
            continue
        buf_t.append(t)
        buf_i.append(imgs)
        have += len(t)
        while have >= chunk:
            tt = Table.concatenate(buf_t)
            ii = np.concatenate(buf_i)
            yield k, tt.subset(np.arange(chunk)), ii[:chunk]
            k += 1
            rest = np.arange(chunk, have)
            buf_t, buf_i = ([tt.subset(rest)], [ii[chunk:]]) if len(rest) else ([], [])
            have -= chunk
    if have:
        yield k, Table.concatenate(buf_t), np.concatenate(buf_i)


# --------------------------------------------------------------------------
# image stacks
def header_pixel_size(value: float | None) -> float | None:
    """A stack header's pixel size, None when it carries none (0, or 1.0: the
    default that many programs write when they do not know it)."""
    return None if not value or abs(value - 1.0) < 1e-6 else float(value)


class StackCheck:
    """Checks every image stack a table references (each file once): it
    exists, its images are square, all stacks have the same box, and the
    header's pixel size (when it has one) agrees with ``pixel_size`` within 1 %.
    The table's own pixel size (its ``samplingRate`` column: RELION's
    ``rlnImagePixelSize`` of the optics groups, or magnification and detector
    pixel of older STAR files) is checked the same way: one value for all rows
    (within 1 %). ``pixel_size=None`` adopts the table's, else the first
    header's. ``box``: the box required."""

    def __init__(self, pixel_size=None, box=None, name="--pixel-size"):
        self.pixel_size = pixel_size
        self.box = box
        self.name = name
        self.seen = set()
        self._box_from = None
        self._ps_from = None          # where an adopted pixel size came from

    def _source(self):
        return f"{self.name} {self.pixel_size:g}" if self._ps_from is None else \
            f"{self.pixel_size:g} Å ({self._ps_from})"

    def _check_table_pixel_size(self, table: Table) -> None:
        if "samplingRate" not in table or not len(table):
            return
        ps = np.asarray(table["samplingRate"], dtype=np.float64)
        ps = ps[np.isfinite(ps) & (ps > 0)]
        if not len(ps):
            return
        lo, hi = float(ps.min()), float(ps.max())
        if hi - lo > 0.01 * lo:
            raise InputError(f"the particles' pixel sizes (samplingRate, RELION's "
                             f"rlnImagePixelSize) range from {lo:g} to {hi:g} Å: give the "
                             "particles of one pixel size at a time")
        if self.pixel_size is None:
            self.pixel_size, self._ps_from = lo, "the particles' samplingRate"
        elif abs(lo - self.pixel_size) > 0.01 * self.pixel_size:
            raise InputError(f"the particles' pixel size {lo:g} Å (samplingRate, RELION's "
                             f"rlnImagePixelSize) differs from {self._source()}")

    def check(self, table: Table) -> StackCheck:
        from ..io.metadata import parse_image_ref
        from ..io.stacks import open_stack
        table.require(["image"], "image")
        self._check_table_pixel_size(table)
        for ref in dict.fromkeys(table["image"]):
            _, p = parse_image_ref(ref)
            full = table.image_path(p)
            if full in self.seen:
                continue
            self.seen.add(full)
            st = open_stack(full)
            shape = st.shape[1:]
            if shape[0] != shape[1]:
                raise InputError(f"{full}: images are {shape[1]}x{shape[0]} px, not square")
            if self.box is None:
                self.box, self._box_from = shape[0], full
            elif shape[0] != self.box:
                raise InputError(f"{full}: images are {shape[0]} px, "
                                 f"{self._box_from or 'expected'}: {self.box} px (mixed boxes)")
            hp = header_pixel_size(st.pixel_size)
            if hp is None:
                continue
            if self.pixel_size is None:
                self.pixel_size, self._ps_from = hp, f"header of {full}"
            elif abs(hp - self.pixel_size) > 0.01 * self.pixel_size:
                raise InputError(f"{full}: header pixel size {hp:g} Å differs from "
                                 f"{self._source()}")
        return self


def remove_stale_temporaries(*paths: PathLike) -> None:
    """Remove the temporary files that :func:`deephemnma.utils.atomic_path`
    left beside ``paths`` when a run writing them was killed (``.NAME.XXXXXXXX
    .tmpEXT`` in the same folder). Call it before writing ``paths`` again."""
    import re
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        name, ext = os.path.splitext(os.path.basename(path))
        pattern = re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp{re.escape(ext)}")
        for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*")):
            if pattern.fullmatch(os.path.basename(tmp)) and os.path.isfile(tmp):
                os.remove(tmp)


# --------------------------------------------------------------------------
# configs saved as JSON (a stage run in another process: torchrun)
def _tuples(value):
    """JSON lists back to the tuples a config field holds (nested too)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def save_config(cfg: StageConfig, path: PathLike) -> PathLike:
    """Write a stage config as JSON (``{field: value}``; tuples become lists),
    atomically. :func:`load_config` reads it back equal."""
    data = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return path


def load_config(config_class: type, path: PathLike) -> StageConfig:
    """The config of class ``config_class`` saved by :func:`save_config`.
    Lists are read back as tuples where the field's default or annotation is
    a tuple; an unknown field or a file that is not a JSON object is an
    InputError."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not a JSON config ({e})") from None
    need(isinstance(data, dict), f"{path}: not a JSON object of config fields")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields))
    need(not unknown, f"{path}: unknown field(s) for {config_class.__module__}."
                      f"{config_class.__name__}: {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        f = fields[name]
        wants_tuple = f.type in (tuple, "tuple") or isinstance(f.default, tuple)
        values[name] = _tuples(value) if wants_tuple else value
    return config_class(**values)
