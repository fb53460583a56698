"""Conversion between Scipion objects and deephemnma's core arrays / Tables.

Alignment: Scipion stores a projection alignment as a 4x4 matrix; Xmipp
angles/shifts convert to it exactly as scipion-em-xmipp does
(``matrixFromGeometry`` with ``inverseTransform=True`` for projections), so
ContinuousFlex and Xmipp read our particles. NMA amplitudes and costs are the
attributes ``_xmipp_nmaDisplacements`` (CsvList of floats) and ``_xmipp_cost``
(Float), as ContinuousFlex's FlexProtAlignmentNMA writes them.
"""
import os

import numpy as np
import pwem.objects as emobj
import pyworkflow.object as pwobj
from pwem.convert.transformations import euler_from_matrix, euler_matrix, translation_from_matrix

from ..io.metadata import Table, image_ref

NMA_ATTR = "_xmipp_nmaDisplacements"
COST_ATTR = "_xmipp_cost"


def matrix_from_geometry(angles, shifts):
    """Xmipp (rot, tilt, psi) degrees + (shiftX, shiftY) px -> Scipion 4x4
    projection-alignment matrix."""
    rad = -np.deg2rad(np.asarray(angles, float))
    M = euler_matrix(rad[0], rad[1], rad[2], "szyz")
    M[:3, 3] = -np.array([shifts[0], shifts[1], 0.0])
    return np.linalg.inv(M)


def geometry_from_matrix(matrix):
    """Inverse of :func:`matrix_from_geometry` -> (angles (3,), shifts (2,))."""
    M = np.linalg.inv(np.asarray(matrix, float))
    shifts = -translation_from_matrix(M)
    angles = -np.rad2deg(euler_from_matrix(M, axes="szyz"))
    return angles, shifts[:2]


def particles_to_table(parts, need_alignment=False, project=None):
    """SetOfParticles -> Table (image refs ``N@path``; angles, shifts, NMA
    amplitudes, cost and CTF when present; itemId = objId).

    ``project``: the project folder (Scipion's current folder in a run). The
    images inside it are referenced relative to it (the table's root: a file
    written with :func:`deephemnma.io.metadata.write_xmd` references them
    relative to itself, so the project can be moved); those outside it
    (absolute in Scipion's set) stay absolute. Without it, every reference is
    absolute."""
    from .base import DeepHEMNMAError
    rows = {"itemId": [], "image": []}
    ang, sh, nma, cost, ctf = [], [], [], [], []
    has_align = parts.hasAlignmentProj()
    if need_alignment and not has_align:
        raise DeepHEMNMAError("the particles have no projection alignment (angles and shifts)")
    has_ctf = parts.hasCTF()
    root = os.path.abspath(project) if project is not None else None
    for p in parts.iterItems(orderBy="id"):
        rows["itemId"].append(p.getObjId())
        idx, fn = p.getLocation()
        rows["image"].append(image_ref(idx or 1, _image_path(fn, root)))
        if has_align:
            a, s = geometry_from_matrix(p.getTransform().getMatrix())
            ang.append(a)
            sh.append(s)
        if hasattr(p, NMA_ATTR):
            nma.append([float(x) for x in getattr(p, NMA_ATTR)])
        if hasattr(p, COST_ATTR):
            cost.append(float(getattr(p, COST_ATTR)))
        if has_ctf:
            c = p.getCTF()
            ctf.append([c.getDefocusU(), c.getDefocusV(), c.getDefocusAngle()])
    t = Table({"itemId": np.array(rows["itemId"]), "image": np.array(rows["image"], dtype=object)},
              root)
    if ang:
        a = np.array(ang)
        t["angleRot"], t["angleTilt"], t["anglePsi"] = a.T
        t["shiftX"], t["shiftY"] = np.array(sh).T
    if nma and len(nma) == len(t):
        t["nmaDisplacements"] = np.array(nma)
    if cost and len(cost) == len(t):
        t["cost"] = np.array(cost)
    if ctf:
        c = np.array(ctf)
        acq = parts.getAcquisition()
        t["ctfDefocusU"], t["ctfDefocusV"], t["ctfDefocusAngle"] = c.T
        t["ctfVoltage"] = np.full(len(t), acq.getVoltage())
        t["ctfSphericalAberration"] = np.full(len(t), acq.getSphericalAberration())
        t["ctfQ0"] = np.full(len(t), acq.getAmplitudeContrast())
    return t


def _image_path(fn, root):
    """An image file's path: relative to ``root`` when inside it (``fn``
    relative: to the current folder, Scipion's project folder), else
    absolute."""
    full = os.path.abspath(fn)
    if root is not None:
        rel = os.path.relpath(full, root)
        if not rel.startswith(os.pardir + os.sep) and rel != os.pardir:
            return rel
    return full


#: the class of a particle that no class of the given classes holds, or whose
#: class attribute has no value
UNCLASSIFIED = "unclassified"


def particle_attribute(particle, name):
    """The attribute of ``particle`` that ``name`` designates (``_rlnClassNumber``
    or ``rlnClassNumber``), or None."""
    n = str(name or "").strip()
    for a in dict.fromkeys((n, "_" + n.lstrip("_"))):
        if n and hasattr(particle, a):
            return a
    return None


def class_labels(item_ids, parts=None, classes=None, attribute=None):
    """The class of each particle id of ``item_ids``: the id of the class of
    ``classes`` (a SetOfClasses) holding a particle of that id, or the value
    of its attribute ``attribute`` in ``parts``; :data:`UNCLASSIFIED` where
    there is none. Returns an object array."""
    of = {}
    if classes is not None:
        for cls in classes.iterItems():
            cid = int(cls.getObjId())
            for p in cls.iterItems():
                of[int(p.getObjId())] = cid
    elif attribute:
        for p in parts.iterItems(orderBy="id"):
            a = particle_attribute(p, attribute)
            v = getattr(p, a) if a else None
            v = v.get() if hasattr(v, "get") else v
            if v is not None and str(v).strip() != "":
                of[int(p.getObjId())] = v
    return np.array([of.get(int(i), UNCLASSIFIED) for i in item_ids], dtype=object)


GT_ATTRS = ("_deephemnma_gtAngles", "_deephemnma_gtShifts", "_deephemnma_gtAmplitudes")


def truth_table(parts):
    """Ground truth kept on synthetic particles (``_deephemnma_gt*``) -> Table,
    or None when the particles carry none."""
    first = parts.getFirstItem()
    if first is None or not all(hasattr(first, a) for a in GT_ATTRS):
        return None
    ids, vals = [], {a: [] for a in GT_ATTRS}
    for p in parts.iterItems(orderBy="id"):
        ids.append(p.getObjId())
        for a in GT_ATTRS:
            vals[a].append([float(x) for x in getattr(p, a)])
    ang, sh, q = (np.array(vals[a]) for a in GT_ATTRS)
    return Table({"itemId": np.array(ids), "angleRot": ang[:, 0], "angleTilt": ang[:, 1],
                  "anglePsi": ang[:, 2], "shiftX": sh[:, 0], "shiftY": sh[:, 1],
                  "nmaDisplacements": q})


def set_particle_values(p, row_angles=None, row_shifts=None, amplitudes=None, cost=None):
    """Write alignment / NMA attributes onto one Particle."""
    if row_angles is not None:
        p.setTransform(emobj.Transform(matrix_from_geometry(row_angles, row_shifts)))
    if amplitudes is not None:
        setattr(p, NMA_ATTR, pwobj.CsvList(pType=float))
        getattr(p, NMA_ATTR).set([float(x) for x in amplitudes])
    if cost is not None:
        setattr(p, COST_ATTR, pwobj.Float(float(cost)))


def fill_particles(out_set, in_set, table, with_alignment=True):
    """Copy ``in_set`` into ``out_set`` with the values of ``table`` (matched by
    itemId = objId); rows absent from the table are skipped."""
    index = {int(i): k for k, i in enumerate(table["itemId"])}
    out_set.copyInfo(in_set)
    if with_alignment and "angleRot" in table:
        out_set.setAlignmentProj()
    ang = table.angles() if "angleRot" in table else None
    sh = table.shifts()
    for p in in_set.iterItems(orderBy="id"):
        k = index.get(p.getObjId())
        if k is None:
            continue
        q = p.clone()
        set_particle_values(q, None if ang is None else ang[k], sh[k],
                            table["nmaDisplacements"][k] if "nmaDisplacements" in table else None,
                            table["cost"][k] if "cost" in table else None)
        out_set.append(q)


def modes_to_set(protocol, modes_xmd, pdb):
    """ContinuousFlex-layout folder -> SetOfNormalModes output. Each mode's
    objId is its number (vec.N -> N), as ContinuousFlex's ``rowToMode`` sets
    it: its mode selection ("7-9") and viewers index modes by objId."""
    from ..core.nma import mode_number
    from ..io.metadata import read_xmd
    folder = os.path.dirname(modes_xmd)
    t = read_xmd(modes_xmd)
    nm = protocol._createSetOfNormalModes()
    orders = t["order_"] if "order_" in t else [None] * len(t)
    for f, col, score, order in zip(t["nmaModefile"], t["nmaCollectivity"], t["nmaScore"],
                                    orders):
        fn = f if os.path.isabs(f) else os.path.join(folder, f)
        m = emobj.NormalMode(modeFile=fn, collectivity=float(col), score=float(score))
        m.setObjId(int(order) if order is not None else mode_number(fn))
        nm.append(m)
    nm.setPdb(pdb)
    return nm


# --------------------------------------------------------------------------
# ContinuousFlex's NMA run layout
class ContinuousFlexLayout:
    """File names of a ContinuousFlex NMA run folder (FlexProtNMA), the ones
    its other protocols and viewers open from a SetOfNormalModes:

    * ``modes.sqlite``, ``modes.xmd``, ``modes/vec.N`` in the run folder
      (FlexNMAViewer: ``dirname(dirname(vec.N))`` is the run folder);
    * ``atoms.pdb`` beside ``modes.sqlite`` (FlexProtAlignmentNMA for an
      atomic structure) or ``pseudoatoms.pdb`` (the modes' PDB when it is
      flagged as pseudoatoms);
    * ``extra/maxAtomShifts.xmd`` (per atom: its largest shift over the
      flexible modes, ``nmaAtomShift``, and that mode's file, ``nmaModefile``)
      and ``extra/distanceProfiles/vecN.xmd`` (per atom: its shift along mode
      N, ``nmaAtomShift``), N >= 7."""

    def __init__(self, run_folder):
        self.run = os.fspath(run_folder)

    def path(self, *p):
        return os.path.join(self.run, *p)

    @property
    def modes_xmd(self):
        return self.path("modes.xmd")

    @property
    def atoms_pdb(self):
        return self.path("atoms.pdb")

    @property
    def pseudoatoms_pdb(self):
        return self.path("pseudoatoms.pdb")

    @property
    def max_shifts(self):
        return self.path("extra", "maxAtomShifts.xmd")

    def distance_profile(self, number):
        return self.path("extra", "distanceProfiles", f"vec{int(number)}.xmd")


def write_xmipp_pseudoatoms(path, coords, weights, sigma):
    """Pseudoatoms as Xmipp's ``volume_to_pseudoatoms`` writes them (read by
    Xmipp's programs and ContinuousFlex): REMARK lines with the Gaussian std
    in Å (``fixedGaussian``) and the intensity column, one ``DENS`` atom per
    line, intensity (weight relative to the largest) in the occupancy column."""
    from ..utils import atomic_path
    w = np.asarray(weights, float)
    w = w / w.max()
    lines = ["REMARK xmipp_volume_to_pseudoatoms (written by deephemnma)",
             f"REMARK fixedGaussian {float(sigma):f}", "REMARK intensityColumn occupancy"]
    for n, ((x, y, z), i) in enumerate(zip(np.asarray(coords, float), w), start=1):
        lines.append(f"ATOM  {n % 100000:5d} DENS DENS{n % 100000:5d}    "
                     f"{x:8.3f}{y:8.3f}{z:8.3f}{i:6.2f}     1      DENS")
    with atomic_path(os.fspath(path)) as tmp, open(tmp, "w") as f:
        f.write("\n".join(lines + ["END"]) + "\n")


def write_continuousflex_layout(run_folder, reference_pdb, pseudoatoms=None):
    """Complete an NMA run folder that holds ``modes.xmd`` + ``modes/vec.N``
    (:func:`deephemnma.core.nma.write_continuousflex`) with the files
    ContinuousFlex opens (:class:`ContinuousFlexLayout`): ``atoms.pdb`` (a copy
    of ``reference_pdb``, the atoms the modes move), or for an EM map
    ``pseudoatoms.pdb`` in Xmipp's format from ``pseudoatoms`` = (coords Å,
    weights, sigma Å), and the atom-shift profiles. Shifts are the norms of
    each atom's 3-vector in the unit-norm mode (ContinuousFlex: "unitary
    shift"). Returns the layout."""
    import shutil
    from ..core.nma import is_rigid, mode_number
    from ..io.metadata import Table, read_xmd, write_xmd
    lay = ContinuousFlexLayout(run_folder)
    if pseudoatoms is None:
        shutil.copyfile(reference_pdb, lay.atoms_pdb)
    else:
        write_xmipp_pseudoatoms(lay.pseudoatoms_pdb, *pseudoatoms)
    t = read_xmd(lay.modes_xmd)
    os.makedirs(os.path.dirname(lay.distance_profile(7)), exist_ok=True)
    best, best_file = None, None
    for f in t["nmaModefile"]:
        fn = f if os.path.isabs(f) else os.path.join(lay.run, f)
        num = mode_number(fn)
        if num is None or is_rigid(num):
            continue
        d = np.linalg.norm(np.loadtxt(fn).reshape(-1, 3), axis=1)
        write_xmd(lay.distance_profile(num), Table({"nmaAtomShift": d}))
        if best is None:
            best, best_file = d.copy(), np.full(len(d), os.path.abspath(fn), dtype=object)
        else:
            larger = d > best
            best[larger] = d[larger]
            best_file[larger] = os.path.abspath(fn)
    if best is not None:
        write_xmd(lay.max_shifts, Table({"nmaAtomShift": best, "nmaModefile": best_file}))
    return lay


def modes_from_set(modes_set, ref_coords):
    """SetOfNormalModes (ours or ContinuousFlex's) -> core NormalModes; vec.N
    files are read, numbering from the file names (vec.N -> mode N)."""
    from ..core.nma import NormalModes, mode_number
    vecs, nums, cols = [], [], []
    for m in modes_set.iterItems(orderBy="id"):
        v = np.loadtxt(m.getModeFile()).reshape(-1, 3)
        vecs.append(v / np.linalg.norm(v))
        nums.append(mode_number(m.getModeFile()) or len(nums) + 1)
        cols.append(m.getCollectivity() or 0.0)
    vectors = np.array(vecs)
    if vectors.shape[1] != len(ref_coords):
        from .base import DeepHEMNMAError
        raise DeepHEMNMAError(f"the normal modes move {vectors.shape[1]} atoms, the reference has "
                         f"{len(ref_coords)}")
    return NormalModes(vectors, np.full(len(nums), np.nan), np.array(nums), np.array(cols),
                       np.asarray(ref_coords, float))
