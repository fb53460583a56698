"""Particle metadata: Xmipp ``.xmd`` and RELION ``.star`` (3.0 and 3.1).

A :class:`Table` is an ordered mapping from Xmipp label names (without the
leading underscore: ``image``, ``angleRot``, ``shiftX``, ``nmaDisplacements``,
``cost``, ``itemId``, ``ctfDefocusU`` ...) to numpy arrays of equal length.
Vector columns (``nmaDisplacements``) are float arrays of shape (n, k).

Xmipp stores vectors as quoted strings (``'  -27.19  -28.40 '``). RELION files
are converted to Xmipp names on reading: ``rlnOriginX`` (pixels, 3.0) or
``rlnOriginXAngst`` (3.1) become ``shiftX`` in pixels with the **same sign**
(both Xmipp and RELION store the translation that re-centres the particle),
and the 3.1 optics group values are copied into each particle row.
"""
import os
import shlex

import numpy as np

from ..errors import InputError
from ..utils import atomic_path

__all__ = ["Table", "read_metadata", "iter_metadata", "count_rows", "read_xmd", "read_star",
           "write_xmd", "concatenate_xmd", "find_label", "CLASS_LABELS",
           "write_star", "parse_image_ref", "image_ref"]

VECTOR_LABELS = {"nmaDisplacements"}
INT_LABELS = {"itemId", "enabled", "ref", "classNumber", "opticsGroup"}
# labels whose values are floating-point numbers, also where a file writes
# them as integers ('300'); a value that does not parse ("abc") becomes NaN,
# so that the row is rejected alone by the stages' row checks
FLOAT_LABELS = {"angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "cost",
                "ctfDefocusU", "ctfDefocusV", "ctfDefocusAngle", "ctfVoltage",
                "ctfSphericalAberration", "ctfQ0", "ctfPhaseShift", "samplingRate"}

# RELION label -> (Xmipp label, scale kind)
_RELION_TO_XMIPP = {
    "rlnImageName": "image",
    "rlnMicrographName": "micrograph",
    "rlnAngleRot": "angleRot",
    "rlnAngleTilt": "angleTilt",
    "rlnAnglePsi": "anglePsi",
    "rlnOriginX": "shiftX",
    "rlnOriginY": "shiftY",
    "rlnDefocusU": "ctfDefocusU",
    "rlnDefocusV": "ctfDefocusV",
    "rlnDefocusAngle": "ctfDefocusAngle",
    "rlnVoltage": "ctfVoltage",
    "rlnSphericalAberration": "ctfSphericalAberration",
    "rlnAmplitudeContrast": "ctfQ0",
    "rlnPhaseShift": "ctfPhaseShift",
    "rlnClassNumber": "ref",
    "rlnOpticsGroup": "opticsGroup",
    "rlnImagePixelSize": "samplingRate",
}
_XMIPP_TO_RELION = {v: k for k, v in _RELION_TO_XMIPP.items()}
# RELION labels of numbers read as floats even when written as integers
# ('300'), as their Xmipp names are (FLOAT_LABELS)
_FLOAT_RELION = {k for k, v in _RELION_TO_XMIPP.items() if v in FLOAT_LABELS} | {
    "rlnOriginXAngst", "rlnOriginYAngst", "rlnMagnification", "rlnDetectorPixelSize"}

#: the labels that hold a particle's class, in the order they are looked for:
#: Xmipp's ``ref`` (RELION's ``rlnClassNumber`` is read as it), ``classNumber``,
#: Scipion's ``classId``, ``class``, ``ref3d``
CLASS_LABELS = ("ref", "classNumber", "classId", "class", "ref3d")


def find_label(table, name):
    """The column of ``table`` that ``name`` designates, or None. ``name`` may be
    written as in a metadata file or as a Scipion attribute: ``_rlnClassNumber``,
    ``rlnClassNumber``, ``_xmipp_ref`` and ``ref`` all designate Xmipp's ``ref``
    (the column RELION's label is read into); a class label (one of
    :data:`CLASS_LABELS` or ``rlnClassNumber``) also finds any other class
    label; case is ignored when no column matches exactly."""
    n = str(name).strip().lstrip("_")
    if not n:
        return None
    candidates = [n]
    if n.startswith("xmipp_"):
        candidates.append(n[len("xmipp_"):])
    for c in list(candidates):
        candidates += [m for m in (_RELION_TO_XMIPP.get(c), _XMIPP_TO_RELION.get(c)) if m]
    classes = {c.lower() for c in CLASS_LABELS + ("rlnClassNumber",)}
    if any(c.lower() in classes for c in candidates):
        candidates += list(CLASS_LABELS) + ["rlnClassNumber"]
    for c in candidates:
        if c in table:
            return c
    lower = {c.lower(): c for c in table.columns}
    return next((lower[c.lower()] for c in candidates if c.lower() in lower), None)


class Table:
    """Ordered columns of equal length. ``t['angleRot']`` -> numpy array.

    ``root`` is the folder from which relative image references resolve (the
    folder of the file the table was read from; None: the current folder, or
    references already relative to wherever the table will be written).
    :func:`write_xmd` and :func:`write_star` rebase them onto the folder of the
    file they write, so every written file is usable from where it is."""

    def __init__(self, columns=None, root=None):
        self._cols = {}
        self.root = root
        for k, v in (columns or {}).items():
            self[k] = v

    # mapping interface -----------------------------------------------------
    def __len__(self):
        return len(next(iter(self._cols.values()))) if self._cols else 0

    def __contains__(self, key):
        return key in self._cols

    def __getitem__(self, key):
        try:
            return self._cols[key]
        except KeyError:
            raise KeyError(f"metadata has no column '{key}' "
                           f"(columns: {', '.join(self._cols)})") from None

    def __setitem__(self, key, values):
        arr = np.asarray(values)
        if arr.ndim == 0:
            arr = np.full(len(self) if self._cols else 1, arr)
        if self._cols and len(arr) != len(self):
            raise InputError(f"column '{key}' has {len(arr)} values, table has {len(self)} rows")
        self._cols[key] = arr

    def __delitem__(self, key):
        del self._cols[key]

    def get(self, key, default=None):
        return self._cols.get(key, default)

    @property
    def columns(self):
        return list(self._cols)

    def items(self):
        return self._cols.items()

    def copy(self):
        return Table({k: v.copy() for k, v in self._cols.items()}, self.root)

    def subset(self, indices):
        """Rows selected by an index array or a boolean mask."""
        idx = np.asarray(indices)
        return Table({k: v[idx] for k, v in self._cols.items()}, self.root)

    @staticmethod
    def concatenate(tables):
        """Rows of several tables (the columns they all have). Tables read from
        different folders get absolute image references."""
        tables = [t for t in tables if len(t)]
        if not tables:
            return Table()
        roots = {t.root for t in tables}
        if len(roots) > 1:
            tables = [t.rebased(None, absolute=True) for t in tables]
            roots = {None}
        cols = [c for c in tables[0].columns if all(c in t for t in tables)]
        return Table({c: np.concatenate([t[c] for t in tables]) for c in cols}, roots.pop())

    def image_path(self, path):
        """Where an image reference's file is (``path`` as in the table)."""
        if os.path.isabs(path) or self.root is None:
            return path
        return os.path.join(self.root, path)

    def rebased(self, folder, absolute=False):
        """A copy whose relative image references resolve from ``folder``
        (absolute ones stay; all absolute with ``absolute=True``). No-op copy
        when the table has no root or no image column."""
        out = self.copy()
        if "image" not in self or (self.root is None and not absolute):
            return out
        folder = os.path.abspath(folder or os.getcwd())
        cache = {}
        refs = []
        for ref in self["image"]:
            ref = str(ref)
            i, p = ref.split("@", 1) if "@" in ref else (None, ref)
            if p not in cache:
                full = os.path.abspath(self.image_path(p))
                cache[p] = full if (absolute or os.path.isabs(p)) else \
                    os.path.relpath(full, folder)
            refs.append(cache[p] if i is None else f"{i}@{cache[p]}")
        out["image"] = np.array(refs, dtype=object)
        out.root = None if absolute else folder
        return out

    def angles(self):
        """(n, 3) Euler angles in degrees."""
        self.require(["angleRot", "angleTilt", "anglePsi"], "Euler angles")
        return np.column_stack([self["angleRot"], self["angleTilt"],
                                self["anglePsi"]]).astype(np.float64)

    def shifts(self):
        """(n, 2) shifts in pixels (0 where absent)."""
        if "shiftX" not in self:
            return np.zeros((len(self), 2))
        return np.column_stack([self["shiftX"], self["shiftY"]]).astype(np.float64)

    def require(self, labels, what="", path=None):
        missing = [c for c in labels if c not in self]
        if missing:
            where = f" in {path}" if path else ""
            raise InputError(f"metadata{where} lacks {what + ' ' if what else ''}"
                             f"column(s): {', '.join(missing)}")

    def __repr__(self):
        return f"Table({len(self)} rows: {', '.join(self._cols)})"


# --------------------------------------------------------------------------
# image references
def parse_image_ref(ref):
    """'000012@path.stk' -> (12, 'path.stk'); 'path.mrc' -> (1, 'path.mrc')."""
    ref = str(ref)
    if "@" in ref:
        i, path = ref.split("@", 1)
        return int(i), path
    return 1, ref


def image_ref(index, path):
    """Xmipp image reference ``000012@path`` (index 1-based)."""
    return f"{int(index):06d}@{path}"


# --------------------------------------------------------------------------
# generic STAR tokenizer
def _tokenize(line):
    if "'" in line or '"' in line:
        return shlex.split(line, posix=True)
    return line.split()


def _star_events(path, chunk=None):
    """Stream a STAR/XMD file: yield ``(block, labels, rows)`` with ``rows`` a list
    of at most ``chunk`` rows (all of them when None), each a list of strings. A
    loop block yields one or more events (one, with no rows, when it is empty); a
    key-value block yields one event with one row."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"metadata file not found: {path}")
    name = None
    labels, rows, in_loop, header, sent = [], [], False, False, False
    single = {}
    found = False

    def flush():
        if name is None:
            return
        if labels and (rows or not sent):
            yield name, labels[:], rows
        elif not labels and single:
            yield name, list(single), [list(single.values())]

    with open(path, "r", errors="replace") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("data_"):
                for ev in flush():
                    found = True
                    yield ev
                name = line[5:]
                labels, rows, in_loop, header, sent = [], [], False, False, False
                single = {}
                continue
            if name is None:
                raise InputError(f"{path}: not a STAR/XMD file (no 'data_' block before '{line[:40]}')")
            if line.startswith("loop_"):
                in_loop, header = True, True
                continue
            if line.startswith("_"):
                tok = line.split(None, 1)
                label = tok[0][1:]
                if in_loop and header:
                    labels.append(label)
                else:  # key value form
                    val = tok[1] if len(tok) > 1 else ""
                    val = _tokenize(val)
                    single[label] = val[0] if len(val) == 1 else " ".join(val)
                continue
            if in_loop:
                header = False
                values = _tokenize(line)
                if len(values) != len(labels):
                    raise InputError(f"{path}: row has {len(values)} values for "
                                     f"{len(labels)} columns: '{line[:80]}'")
                rows.append(values)
                if chunk and len(rows) == chunk:
                    found = sent = True
                    yield name, labels[:], rows
                    rows = []
    for ev in flush():
        found = True
        yield ev
    if not found:
        raise InputError(f"{path}: no metadata block found (empty or not STAR/XMD)")


def _parse_star_blocks(path):
    """Return {block_name: (labels, rows)}; each row is a list of strings."""
    blocks = {}
    for name, labels, rows in _star_events(path):
        blocks[name] = (labels, rows)
    return blocks


def _column(label, values):
    if label in VECTOR_LABELS:
        if not values:
            return np.zeros((0, 0))
        vecs = [np.array([_float_or_nan(x) for x in v.split()], dtype=np.float64)
                for v in values]
        lengths = [len(v) for v in vecs]
        if len(set(lengths)) > 1:
            # a vector of another length than most rows' is unusable: NaN,
            # so that row alone is rejected (the others keep their values)
            n = max(set(lengths), key=lambda k: (lengths.count(k), k))
            vecs = [v if len(v) == n else np.full(n, np.nan) for v in vecs]
        return np.array(vecs, dtype=np.float64).reshape(len(values), -1)
    try:
        arr = np.array(values, dtype=np.float64)
    except ValueError:
        if label in FLOAT_LABELS or label in _FLOAT_RELION:
            return np.array([_float_or_nan(v) for v in values], dtype=np.float64)
        return np.array(values, dtype=object)
    if label in FLOAT_LABELS or label in _FLOAT_RELION:
        return arr
    if label in INT_LABELS or (arr.size and np.all(arr == np.round(arr)) and
                               all("." not in v and "e" not in v.lower() for v in values[:20])):
        return arr.astype(np.int64)
    return arr


def _float_or_nan(v):
    try:
        return float(v)
    except ValueError:
        return np.nan


def _block_to_table(labels, rows):
    cols = list(zip(*rows)) if rows else [[] for _ in labels]
    return Table({lab: _column(lab, list(vals)) for lab, vals in zip(labels, cols)})


def read_xmd(path, block=None):
    """Read an Xmipp metadata file. ``block``: name of the block (default: the
    first one containing a loop, else the first)."""
    blocks = _parse_star_blocks(os.fspath(path))
    if block is not None:
        if block not in blocks:
            raise InputError(f"{path}: no block 'data_{block}' (has {', '.join(blocks)})")
        return _block_to_table(*blocks[block])
    return _block_to_table(*blocks[_particle_block(blocks, relion=False)])


def read_star(path):
    """Read a RELION 3.0 / 3.1 particle STAR file into Xmipp names.

    Shifts become pixels (3.1 ``rlnOriginXAngst`` divided by the optics group's
    pixel size); optics values (voltage, Cs, Q0, pixel size) are copied into
    each row. Unknown RELION labels are kept with their ``rln`` names."""
    blocks = _parse_star_blocks(os.fspath(path))
    optics = _block_to_table(*blocks["optics"]) if "optics" in blocks else None
    pblock = _particle_block(blocks, relion=True)
    if pblock is None:
        raise InputError(f"{path}: no particle block")
    return _from_relion(_block_to_table(*blocks[pblock]), optics, path)


def _particle_block(blocks, relion):
    """Name of the particle block among ``blocks`` (names -> (labels, rows))."""
    if relion:
        if "particles" in blocks:
            return "particles"
        return next((b for b in blocks if b != "optics"), None)
    for name, (labels, rows) in blocks.items():
        if len(rows) > 1 or "image" in labels:
            return name
    return next(iter(blocks))


def _from_relion(raw, optics, path, first_item=1):
    """A RELION particle Table -> Xmipp names (``first_item``: itemId of row 0
    when the file has none)."""
    t = Table()
    for lab, vals in raw.items():
        t[_RELION_TO_XMIPP.get(lab, lab)] = vals
    if optics is not None:
        og = t["opticsGroup"] if "opticsGroup" in t else np.ones(len(t), np.int64)
        index = {int(g): i for i, g in enumerate(optics["rlnOpticsGroup"])}
        missing = sorted({int(g) for g in og} - set(index))
        if missing:
            raise InputError(f"{path}: optics group(s) {missing} not in the optics block")
        rows = np.array([index[int(g)] for g in og], dtype=np.int64)
        for lab, vals in optics.items():
            name = _RELION_TO_XMIPP.get(lab, lab)
            if name not in t and lab not in ("rlnOpticsGroup", "rlnOpticsGroupName"):
                t[name] = vals[rows]
    if "rlnOriginXAngst" in t:
        if "samplingRate" not in t:
            raise InputError(f"{path}: origins in Å but no pixel size in the optics block")
        t["shiftX"] = t["rlnOriginXAngst"] / t["samplingRate"]
        t["shiftY"] = t["rlnOriginYAngst"] / t["samplingRate"]
        del t["rlnOriginXAngst"]
        del t["rlnOriginYAngst"]
    if "samplingRate" not in t and "rlnDetectorPixelSize" in t and "rlnMagnification" in t:
        t["samplingRate"] = t["rlnDetectorPixelSize"] * 1e4 / t["rlnMagnification"]
    if "itemId" not in t:
        t["itemId"] = np.arange(first_item, first_item + len(t))
    return t


def _is_relion(path):
    if not path.endswith(".star"):
        return False
    with open(path, errors="replace") as f:
        return "XMIPP_STAR" not in f.read(200)


def read_metadata(path, block=None):
    """Read ``.xmd`` or ``.star`` (by extension; .star files written by Xmipp
    with ``XMIPP_STAR`` headers are read as Xmipp)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"metadata file not found: {path}")
    t = read_star(path) if _is_relion(path) else read_xmd(path, block)
    t.root = _root(path)
    return t


def _root(path):
    return os.path.dirname(os.path.abspath(path))


def iter_metadata(path, chunk=4096):
    """The particle table of an ``.xmd`` / ``.star`` file as consecutive Tables of
    at most ``chunk`` rows, read as the file streams by: memory does not grow
    with the number of particles. The particle block is the first one with an
    ``image`` column (``.xmd``) or ``data_particles`` (RELION)."""
    path = os.fspath(path)
    start = 0
    for labels, rows, relion, optics in _particle_rows(path, chunk):
        t = _block_to_table(labels, rows)
        if relion:
            t = _from_relion(t, optics, path, first_item=start + 1)
        t.root = _root(path)
        start += len(t)
        yield t


def count_rows(path):
    """Number of rows of the particle block that :func:`iter_metadata` yields
    (parsed, not converted or kept)."""
    return sum(len(rows) for _, rows, _, _ in _particle_rows(os.fspath(path), 65536))


def _particle_rows(path, chunk):
    """(labels, rows, relion, optics Table or None) for each chunk of the
    particle block (see :func:`iter_metadata`)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"metadata file not found: {path}")
    relion = _is_relion(path)
    optics, optics_rows, chosen = None, [], None
    for name, labels, rows in _star_events(path, chunk):
        if relion and name == "optics":
            optics_rows += rows
            optics = _block_to_table(labels, optics_rows)
            continue
        if chosen is None:
            if not (("rlnImageName" if relion else "image") in labels
                    or (relion and name == "particles")):
                continue
            chosen = name
        elif name != chosen:
            break
        if rows:
            yield labels, rows, relion, optics
    if chosen is None:
        raise InputError(f"{path}: no particle block with an image column")


# --------------------------------------------------------------------------
# writing
def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return f"{v:.8g}" if np.isfinite(v) else "nan"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    s = str(v)
    return f"'{s}'" if (not s or any(c.isspace() for c in s)) else s


def _fmt_column(label, arr):
    if arr.ndim == 2:
        return ["' " + " ".join(f"{x:.8g}" for x in row) + " '" for row in arr]
    return [_fmt(v) for v in arr]


def _xmd_header(labels, block="noname"):
    return ("# XMIPP_STAR_1 * \n# \n" + f"data_{block}\nloop_\n"
            + "".join(f" _{lab}\n" for lab in labels))


def _for_file(path, table, ref_dir=None, absolute=False):
    """The table with image references that resolve from ``ref_dir`` (default:
    the folder of ``path``), or absolute ones."""
    if table.root is None and not absolute:
        return table
    return table.rebased(ref_dir or os.path.dirname(os.path.abspath(path)), absolute)


def write_xmd(path, table, block="noname", ref_dir=None, absolute=False):
    """Write a Table as an Xmipp metadata file (atomic). Image references are
    rebased so that they resolve from the written file's folder (``ref_dir``:
    from that folder instead, for parts later joined elsewhere;
    ``absolute=True``: absolute paths)."""
    path = os.fspath(path)
    table = _for_file(path, table, ref_dir, absolute)
    cols = [(lab, _fmt_column(lab, np.asarray(arr))) for lab, arr in table.items()]
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(_xmd_header(table.columns, block))
        for i in range(len(table)):
            f.write(" ".join(c[i] for _, c in cols) + "\n")


def concatenate_xmd(paths, out, block="noname"):
    """Join single-block ``.xmd`` files with the same columns into ``out``
    (atomic), line by line: memory does not grow with the number of rows."""
    labels = None
    with atomic_path(os.fspath(out)) as tmp, open(tmp, "w") as f:
        for path in paths:
            mine, rows = [], False
            with open(path, errors="replace") as src:
                for raw in src:
                    line = raw.strip()
                    if rows:
                        if line and not line.startswith("#"):
                            f.write(line + "\n")
                    elif line.startswith("_"):
                        mine.append(line.split()[0][1:])
                    elif line and not line.startswith(("#", "data_", "loop_")):
                        if labels is None:
                            labels = mine
                            f.write(_xmd_header(labels, block))
                        elif mine != labels:
                            raise InputError(f"{path}: columns {mine} differ from {labels}")
                        rows = True
                        f.write(line + "\n")
        if labels is None:
            raise InputError("no rows to join")


def write_star(path, table, pixel_size, image_size=None, absolute=False):
    """Write a RELION 3.1 particle STAR (optics block with the CTF optics and
    pixel size; shifts written as ``rlnOriginXAngst``). Image references are
    rebased as in :func:`write_xmd`."""
    path = os.fspath(path)
    table = _for_file(path, table, None, absolute)
    n = len(table)

    def first(label, default):
        return float(table[label][0]) if label in table and n else default

    optics = [("rlnOpticsGroup", "1"), ("rlnOpticsGroupName", "opticsGroup1"),
              ("rlnAmplitudeContrast", _fmt(first("ctfQ0", 0.1))),
              ("rlnSphericalAberration", _fmt(first("ctfSphericalAberration", 2.0))),
              ("rlnVoltage", _fmt(first("ctfVoltage", 300.0))),
              ("rlnImagePixelSize", _fmt(float(pixel_size)))]
    if image_size is not None:
        optics += [("rlnImageSize", str(int(image_size))), ("rlnImageDimensionality", "2")]
    skip = {"ctfVoltage", "ctfSphericalAberration", "ctfQ0", "samplingRate",
            "shiftX", "shiftY", "enabled"}
    cols = []
    for lab, arr in table.items():
        if lab in skip:
            continue
        rel = _XMIPP_TO_RELION.get(lab, lab if lab.startswith("rln") else None)
        if rel is None or np.asarray(arr).ndim != 1:
            continue
        cols.append((rel, _fmt_column(lab, np.asarray(arr))))
    if "shiftX" in table:
        cols.append(("rlnOriginXAngst", [_fmt(v * pixel_size) for v in table["shiftX"]]))
        cols.append(("rlnOriginYAngst", [_fmt(v * pixel_size) for v in table["shiftY"]]))
    cols.append(("rlnOpticsGroup", ["1"] * n))
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\n# version 30001\n\ndata_optics\n\nloop_\n")
        for i, (lab, _) in enumerate(optics):
            f.write(f"_{lab} #{i + 1}\n")
        f.write(" ".join(v for _, v in optics) + "\n\n\n# version 30001\n\ndata_particles\n\nloop_\n")
        for i, (lab, _) in enumerate(cols):
            f.write(f"_{lab} #{i + 1}\n")
        for r in range(n):
            f.write(" ".join(c[r] for _, c in cols) + "\n")
