"""The bad-input table: every command, fed an impossible
input, stops with exit code 2 and ONE line naming the problem (on its own line
after any progress output), no traceback, and leaves nothing behind (no output,
no ``.parts``/``.part``/temporary file, no ``split.npz``, no half-made folder,
no input modified).

A small fixture set is built once per module (AK.pdb from the shared data, its
normal modes, 24 noiseless 32 px particles at 2.6 Å/px, a 4-particle 40 px set,
a 1-epoch model, two maps) plus deliberately broken files. Each case is one row
of ``CASES``: the command's valid base arguments (``BASE``) with a few options
changed. ``test_base_commands_succeed`` proves that the base arguments work, so
that an exit code 2 in a case is due to the changed option.

Most cases run in-process through ``deephemnma.cli.main`` (fast; progress
enabled: DEEPHEMNMA_QUIET unset); one case per command also runs as a real
``python -m deephemnma`` process. Rows with a non-finite value ('abc' in an
angle or amplitude column, a NaN defocus, a NaN image) are not errors: that row
alone is left out and listed in a rejected file (``test_row_rejected``).

Cases per command (``COUNTS``; printed by ``test_case_counts`` with -s), 355
in all: align 50, evaluate 14, fsc 15, landscape 37, model-map 17, nma 18,
outliers 10, predict 26, pseudoatoms 22, reconstruct 35, refine 32, simulate
35, train 44; plus 14 of them again as real processes, 7 row-rejection cases
(align, predict, train, reconstruct, outliers, landscape, refine), evaluate
with an 'abc' angle, and `train` run again with more epochs.
"""
import collections
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import traceback

import numpy as np
import pytest

from conftest import ROOT, shared_file

PS = 2.6          # Å/px of the fixture particles
BOX = 32          # px


# --------------------------------------------------------------------------
# running a command and judging its output
def run_inprocess(argv, capfd, monkeypatch, quiet=False):
    """``deephemnma <argv>`` in this process: (exit code, stdout, stderr).
    An exception escaping the CLI counts as a traceback (exit 1)."""
    from deephemnma.cli import main
    if quiet:
        monkeypatch.setenv("DEEPHEMNMA_QUIET", "1")
    else:
        monkeypatch.delenv("DEEPHEMNMA_QUIET", raising=False)
    capfd.readouterr()
    tb = ""
    try:
        rc = main(list(argv))
    except SystemExit as e:         # argparse
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:           # noqa: BLE001 - what `python -m` would print
        rc, tb = 1, traceback.format_exc()
    out, err = capfd.readouterr()
    return int(rc or 0), out, err + tb


def run_subprocess(argv, cwd, quiet=False, timeout=300):
    """``python -m deephemnma <argv>`` as a real process."""
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("DEEPHEMNMA_QUIET", None)
    if quiet:
        env["DEEPHEMNMA_QUIET"] = "1"
    r = subprocess.run([sys.executable, "-m", "deephemnma"] + list(argv), cwd=cwd, env=env,
                       capture_output=True, timeout=timeout)
    # bytes decoded by hand: text mode would turn the progress '\r' into '\n'
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


_PROGRESS = re.compile(r"^\S[^\r\n]* \d+/\d+ ")      # "align 3/24  12.0 img/s  ETA ..."


def message_lines(err):
    """The lines of stderr that are not progress. A progress line starts with
    '\\r' and holds only '\\r'-separated progress segments; a message glued to a
    progress line (no newline before it) makes that line count as a message."""
    lines = []
    for line in err.split("\n"):
        if not line.strip():
            continue
        if line.startswith("\r"):
            segs = [s for s in line.split("\r")[1:] if s.strip()]
            if all(_PROGRESS.match(s) and "error" not in s.lower() for s in segs):
                continue
        lines.append(line)
    return lines


def check_error(cmd, rc, out, err, expect=None):
    """Exit code 2, one message line (``deephemnma <cmd>: error: ...``) naming
    the problem (``expect``: substrings, any of which must appear), no traceback."""
    both = out + err
    assert "Traceback" not in both, f"traceback:\n{both[-3000:]}"
    assert rc == 2, f"exit code {rc}, expected 2\nstdout: {out[-1500:]}\nstderr: {err[-1500:]}"
    lines = message_lines(err)
    assert len(lines) == 1, f"expected one error line on stderr, got {len(lines)}:\n" + \
        "\n".join(repr(x) for x in lines)
    line = lines[0]
    assert "\r" not in line, f"the error shares a line with progress output: {line!r}"
    assert line.startswith(f"deephemnma {cmd}"), \
        f"the line does not start with the command's name: {line!r}"
    assert "error" in line.lower(), f"not an error line: {line!r}"
    if expect:
        alts = (expect,) if isinstance(expect, str) else expect
        assert any(a.lower() in line.lower() for a in alts), \
            f"message does not name the problem ({' | '.join(alts)}): {line!r}"
    return line


# --------------------------------------------------------------------------
# nothing left behind
def snapshot(root):
    """{relative path: (is_dir, size, mtime_ns)} of everything under ``root``
    (a folder's size/mtime are not compared: files created and removed inside
    change them)."""
    snap = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            is_dir = stat.S_ISDIR(st.st_mode)
            snap[os.path.relpath(p, root)] = (is_dir, 0 if is_dir else st.st_size,
                                              0 if is_dir else st.st_mtime_ns)
    return snap


def leftovers(root, before, saved):
    """Compare ``root`` with ``before``; remove what is new and restore small
    files that changed (so that one failing case does not spoil the next).
    Returns a list of problems."""
    after = snapshot(root)
    problems = []
    new = sorted(set(after) - set(before))
    for rel in new:
        problems.append(f"left behind: {rel}")
    for rel in sorted(set(before) - set(after)):
        problems.append(f"removed an existing file: {rel}")
    for rel in sorted(set(before) & set(after)):
        if before[rel] != after[rel]:
            problems.append(f"modified an existing file: {rel}")
    # restore the fixture for the next cases
    for rel in sorted(new, key=len):
        p = os.path.join(root, rel)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.remove(p)
    for rel, data in saved.items():
        p = os.path.join(root, rel)
        if before.get(rel) != after.get(rel) and data is not None:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
            st = before[rel]
            os.utime(p, ns=(st[2], st[2]))
    return problems


# --------------------------------------------------------------------------
# the fixture set
class Fixture:
    """Paths of the fixture set and the build steps that failed (a case that
    needs a failed step fails with that step's message)."""

    def __init__(self, root):
        self.root = str(root)
        self.failed = {}
        self.saved = {}

    @property
    def paths(self):
        d = self.root
        return {"D": d, "S": os.path.join(d, "sim"), "O": os.path.join(d, "o"),
                "AK": os.path.join(d, "AK.pdb"), "REF": os.path.join(d, "ref"),
                "MODEL": os.path.join(d, "model", "model.pt"),
                "MAP": os.path.join(d, "ref.mrc"), "MAP2": os.path.join(d, "ref2.mrc")}

    def argv(self, template):
        return shlex.split(template.format(**self.paths))


def _cli(argv):
    """Run a build step through the CLI (quiet); raise with its stderr on failure."""
    from deephemnma.cli import main
    old = os.environ.get("DEEPHEMNMA_QUIET")
    os.environ["DEEPHEMNMA_QUIET"] = "1"
    try:
        rc = main([str(a) for a in argv])
    finally:
        if old is None:
            os.environ.pop("DEEPHEMNMA_QUIET", None)
        else:
            os.environ["DEEPHEMNMA_QUIET"] = old
    if rc:
        raise RuntimeError(f"deephemnma {' '.join(map(str, argv))} -> exit {rc}")


def _header_lines(xmd):
    """The header lines (comments, data_, loop_, labels) of an .xmd."""
    head = []
    with open(xmd) as f:
        for line in f:
            s = line.strip()
            if not s or s.startswith(("#", "data_", "loop_", "_")):
                head.append(line)
            else:
                break
    return head


def build_fixture(root):
    """Build the fixture set under ``root``; steps that fail are recorded in
    ``Fixture.failed`` (step -> message) instead of failing every case."""
    from deephemnma.io.metadata import read_metadata, write_xmd
    from deephemnma.io.stacks import open_stack, write_stack, write_volume
    fx = Fixture(root)
    p = fx.paths
    D, S = p["D"], p["S"]
    os.makedirs(p["O"])
    shutil.copy(shared_file("continuousflex", "AK.pdb"), p["AK"])

    def step(name, fn):
        try:
            fn()
        except BaseException as e:      # noqa: BLE001 - recorded, reported by the cases
            fx.failed[name] = f"fixture step {name!r} failed: {type(e).__name__}: {e}"

    # broken and odd files
    for name in ("empty.pdb", "empty.xmd", "empty.mrc", "empty.pt", "empty.npz"):
        open(os.path.join(D, name), "wb").close()
    for name in ("garbage.pdb", "garbage.mrc", "garbage.pt"):
        with open(os.path.join(D, name), "w") as f:
            f.write("this is not what you think it is\n" * 4)
    for name in ("adir", "dir.xmd", "dir.mrc", "dir.png", "dir.json", "dirpdb.pdb"):
        os.makedirs(os.path.join(D, name))

    step("nma", lambda: _cli(["nma", "--structure", p["AK"], "--out", p["REF"], "--modes", 12]))
    step("sim", lambda: _cli(["simulate", "--structure", p["AK"], "--modes", p["REF"], "--out",
                              S, "-n", 24, "--box", BOX, "--pixel-size", PS, "--no-noise",
                              "--seed", 1]))
    step("sim40", lambda: _cli(["simulate", "--structure", p["AK"], "--modes", p["REF"],
                                "--out", os.path.join(D, "sim40"), "-n", 4, "--box", 40,
                                "--pixel-size", PS, "--no-noise", "--seed", 2]))

    def derived():
        t = read_metadata(os.path.join(S, "particles.xmd"))
        n = len(t)
        # zero particles: the header of a real file, no rows
        with open(os.path.join(S, "zero.xmd"), "w") as f:
            f.writelines(_header_lines(os.path.join(S, "particles.xmd")))

        def without(*cols):
            u = t.copy()
            for c in cols:
                if c in u:
                    del u[c]
            return u
        write_xmd(os.path.join(S, "noctf.xmd"),
                  without(*[c for c in t.columns if c.startswith("ctf")]))
        write_xmd(os.path.join(S, "nonma.xmd"), without("nmaDisplacements"))
        write_xmd(os.path.join(S, "noangles.xmd"), without("angleRot", "angleTilt", "anglePsi"))
        write_xmd(os.path.join(S, "noimage.xmd"), without("image"))
        u = t.copy()
        u["image"] = np.array([r.replace("particles.mrcs", "gone.mrcs") for r in u["image"]],
                              dtype=object)
        write_xmd(os.path.join(S, "gone.xmd"), u)
        u = t.copy()
        u["nmaDisplacements"] = t["nmaDisplacements"][:, :2]
        write_xmd(os.path.join(S, "two_modes.xmd"), u)
        # no row in common with particles.xmd: other itemIds, other images,
        # another length (rows are matched by itemId, then image, then position)
        u = t.subset(np.arange(n - 4))
        u["itemId"] = np.arange(1001, 1001 + n - 4)
        u["image"] = np.array([r.replace("particles.mrcs", "bad.mrcs") for r in u["image"]],
                              dtype=object)
        write_xmd(os.path.join(S, "otherids.xmd"), u)
        # rows with non-finite values: 'abc' angle (itemId 3), NaN image (5),
        # NaN defocus (7); 'abc' amplitude (4) in a file of its own
        imgs = np.array(open_stack(os.path.join(S, "particles.mrcs"))[:])
        imgs[4] = np.nan
        write_stack(os.path.join(S, "bad.mrcs"), imgs, PS)
        u = t.copy()
        u["image"] = np.array([r.replace("particles.mrcs", "bad.mrcs") for r in u["image"]],
                              dtype=object)
        rot = u["angleRot"].astype(object)
        rot[2] = "abc"
        u["angleRot"] = rot
        dfu = u["ctfDefocusU"].astype(np.float64)
        dfu[6] = np.nan
        u["ctfDefocusU"] = dfu
        write_xmd(os.path.join(S, "bad_rows.xmd"), u)
        # every row unusable: NaN images and NaN defocus
        write_stack(os.path.join(S, "nanall.mrcs"), np.full_like(imgs, np.nan), PS)
        u = t.copy()
        u["image"] = np.array([r.replace("particles.mrcs", "nanall.mrcs") for r in u["image"]],
                              dtype=object)
        u["ctfDefocusU"] = np.full(n, np.nan)
        write_xmd(os.path.join(S, "allbad.xmd"), u)
        # a stack whose header has no pixel size
        write_stack(os.path.join(S, "nohdr.mrcs"), np.array(
            open_stack(os.path.join(S, "particles.mrcs"))[:]), None)
        u = t.copy()
        u["image"] = np.array([r.replace("particles.mrcs", "nohdr.mrcs") for r in u["image"]],
                              dtype=object)
        write_xmd(os.path.join(S, "nohdr.xmd"), u)
        u = t.copy()
        q = t["nmaDisplacements"].astype(np.float64)
        q[3, 0] = 7777777.0
        u["nmaDisplacements"] = q
        write_xmd(os.path.join(S, "abc_nma.xmd"), u)
        path = os.path.join(S, "abc_nma.xmd")
        text = open(path).read()
        assert text.count("7777777") == 1
        with open(path, "w") as f:
            f.write(text.replace("7777777", "abc"))
        # est with an 'abc' angle, for evaluate
        u = t.copy()
        rot = u["angleRot"].astype(object)
        rot[2] = "abc"
        u["angleRot"] = rot
        write_xmd(os.path.join(S, "abc_angle.xmd"), u)
    step("derived", derived)

    def mixed():
        a = read_metadata(os.path.join(S, "particles.xmd")).subset(np.arange(6))
        b = read_metadata(os.path.join(D, "sim40", "particles.xmd"))
        from deephemnma.io.metadata import Table
        t = Table.concatenate([a, b])
        t["itemId"] = np.arange(1, len(t) + 1)
        write_xmd(os.path.join(D, "mixed.xmd"), t)
    step("mixed", mixed)

    step("model", lambda: _cli(["train", "--particles", os.path.join(S, "particles.xmd"),
                                "--out", os.path.join(D, "model"), "--epochs", 1,
                                "--input-size", BOX, "--batch-size", 8, "--pixel-size", PS]))

    def notours():
        import torch
        torch.save({"weights": np.zeros(3)}, os.path.join(D, "notours.pt"))
    step("notours", notours)

    def maps():
        _cli(["model-map", "--structure", p["AK"], "--out", p["MAP"], "--box", BOX,
              "--pixel-size", PS])
        _cli(["model-map", "--structure", p["AK"], "--out", p["MAP2"], "--box", BOX,
              "--pixel-size", PS, "--sigma", 2.0])
        _cli(["model-map", "--structure", p["AK"], "--out", os.path.join(D, "ref40.mrc"),
              "--box", 40, "--pixel-size", PS])
        shutil.copy(p["MAP"], os.path.join(D, "p_approx.mrc"))
        vol = np.random.default_rng(0).normal(size=(BOX,) * 3).astype(np.float32)
        write_volume(os.path.join(D, "nopix.mrc"), vol, 0.0)
    step("maps", maps)
    # model.pt is all a case needs; the resume checkpoint is large
    for name in ("last.pt",):
        q = os.path.join(D, "model", name)
        if os.path.exists(q):
            os.remove(q)
    # keep small files' bytes, to restore any a case modifies
    for d, _, files in os.walk(D):
        for n in files:
            q = os.path.join(d, n)
            if os.path.getsize(q) < 2 << 20:
                with open(q, "rb") as f:
                    fx.saved[os.path.relpath(q, D)] = f.read()
    return fx


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("bad_input"))


# --------------------------------------------------------------------------
# the table
BASE = {
    "nma": "nma --structure {AK} --out {O}/nma --modes 10",
    "pseudoatoms": "pseudoatoms --map {MAP} --out {O}/pa --sigma-voxels 1.5 --max-atoms 60 "
                   "--target-error 60",
    "simulate": "simulate --structure {AK} --modes {REF} --out {O}/sim -n 4 --box 32 "
                "--pixel-size 2.6 --no-noise",
    "align": "align --particles {S}/particles.xmd --modes {REF} --structure {REF}/reference.pdb "
             "--pixel-size 2.6 --out {O}/al.xmd --angular-step 30 --coarse-iters 3 "
             "--fine-iters 2 --chunk 4",
    "outliers": "outliers --input {S}/particles.xmd --out {O}/kept.xmd",
    "train": "train --particles {S}/particles.xmd --out {O}/tr --epochs 1 --input-size 32 "
             "--batch-size 8 --pixel-size 2.6",
    "predict": "predict --model {MODEL} --particles {S}/particles.xmd --out {O}/pred.xmd "
               "--pixel-size 2.6",
    "landscape": "landscape --particles {S}/particles.xmd --out {O}/land",
    "reconstruct": "reconstruct --particles {S}/particles.xmd --out {O}/rec.mrc "
                   "--pixel-size 2.6 --min-images 5",
    "model-map": "model-map --structure {AK} --out {O}/mm.mrc --box 32 --pixel-size 2.6",
    "fsc": "fsc {MAP} {MAP2} --json {O}/fsc.json",
    "evaluate": "evaluate --est {S}/particles.xmd --truth {S}/particles.xmd --pixel-size 2.6",
}

# fixture steps each case needs, beyond the always-present files
NEEDS = {"nma": (), "pseudoatoms": ("maps",), "simulate": ("nma",),
         "align": ("nma", "sim", "derived"), "outliers": ("sim", "derived"),
         "train": ("sim", "derived"), "predict": ("sim", "derived", "model"),
         "landscape": ("sim", "derived"), "reconstruct": ("sim", "derived", "maps"),
         "model-map": (), "fsc": ("maps",), "evaluate": ("sim", "derived", "nma")}

FLAGS = {"--no-noise", "--no-ctf", "--robust", "--rescale", "--augment", "--from-poses"}


def edit(template, changes):
    """``template`` (a BASE string) with options changed: {option: value},
    value None removes the option, '' adds a flag."""
    tok = shlex.split(template)
    for opt, val in changes.items():
        if opt in tok:
            i = tok.index(opt)
            has_value = opt not in FLAGS
            del tok[i:i + 1 + has_value]
        if val is not None:
            tok += [opt] if val == "" else [opt, val]
    return " ".join(shlex.quote(t) if not t.startswith("{") else t for t in tok)


Case = collections.namedtuple("Case", "cmd id template expect needs")
CASES = []


def case(cmd, name, changes=None, expect=None, template=None, needs=()):
    tpl = template if template is not None else edit(BASE[cmd], changes or {})
    CASES.append(Case(cmd, f"{cmd}-{name}", tpl, expect, tuple(NEEDS[cmd]) + tuple(needs)))


def numbers(cmd, opt, values, expect=None, extra=None):
    """One case per nonsense value of a numeric option."""
    for v in values:
        case(cmd, f"{opt.strip('-')}={v}", dict({opt: v}, **(extra or {})), expect or opt)


def files(cmd, opt, kinds, extra=None):
    """One case per bad file given to ``opt``: missing, empty, garbage, zero
    particles, missing stack, folder..."""
    paths = {"missing": ("{D}/missing%s", "missing%s"), "empty": ("{D}/empty%s", "empty%s"),
             "garbage": ("{D}/garbage%s", "garbage%s"), "zero": ("{S}/zero.xmd", "zero.xmd"),
             "gone-stack": ("{S}/gone.xmd", "gone.mrcs"), "folder": ("{D}/adir", "adir"),
             "no-image-column": ("{S}/noimage.xmd", ("image", "noimage.xmd")),
             "mixed-boxes": ("{D}/mixed.xmd", ("box", "px", "size", "mixed")),
             "nomodes": ("{D}/nomodes", "nomodes"),
             "all-unusable": ("{S}/allbad.xmd", ("allbad.xmd", "usable"))}
    for kind, ext in kinds:
        path, expect = paths[kind]
        if "%s" in path:
            path, expect = path % ext, expect % ext
        case(cmd, f"{opt.strip('-')}-{kind}", dict({opt: path}, **(extra or {})), expect,
             needs=("mixed",) if kind == "mixed-boxes" else ())


NEG = ("0", "-1", "nan")
PARTICLES = [("missing", ".xmd"), ("empty", ".xmd"), ("zero", ""), ("gone-stack", ""),
             ("no-image-column", ""), ("all-unusable", "")]

# ---- nma
files("nma", "--structure", [("missing", ".pdb"), ("empty", ".pdb"), ("garbage", ".pdb"),
                             ("folder", "")])
numbers("nma", "--modes", ("0", "-3"))
numbers("nma", "--cutoff", NEG)
numbers("nma", "--percentile", ("-5", "150", "nan"))
numbers("nma", "--block-size", ("0", "-1"))
case("nma", "selection-matches-nothing", {"--selection": "resname XYZ"}, "selection")
case("nma", "out-holds-modes", {"--out": "{REF}"}, "ref")
case("nma", "out-is-the-structure", {"--out": "{AK}"}, "AK.pdb")
case("nma", "nested-out-bad-cutoff", {"--out": "{O}/new/deep/nma", "--cutoff": "-1"},
     "--cutoff")

# ---- pseudoatoms
files("pseudoatoms", "--map", [("missing", ".mrc"), ("empty", ".mrc"), ("garbage", ".mrc")])
numbers("pseudoatoms", "--voxel-size", NEG)
numbers("pseudoatoms", "--sigma", ("0", "-1", "nan"))
numbers("pseudoatoms", "--sigma-voxels", ("0", "-2"))
numbers("pseudoatoms", "--target-error", ("-5", "nan"))
numbers("pseudoatoms", "--max-atoms", ("0", "-1"))
numbers("pseudoatoms", "--threshold", ("nan",))
files("pseudoatoms", "--mask", [("missing", ".mrc"), ("empty", ".mrc")])
case("pseudoatoms", "mask-other-box", {"--mask": "{D}/ref40.mrc"}, ("ref40", "mask"))
case("pseudoatoms", "out-approx-is-the-map", {"--map": "{D}/p_approx.mrc", "--out": "{D}/p"},
     "p_approx.mrc")
case("pseudoatoms", "out-pdb-is-a-folder", {"--out": "{D}/dirpdb"}, "dirpdb")
case("pseudoatoms", "nested-out-bad-sigma", {"--out": "{O}/new/deep/pa", "--sigma": "-1"},
     "--sigma")

# ---- simulate
files("simulate", "--structure", [("missing", ".pdb"), ("empty", ".pdb"),
                                  ("garbage", ".pdb")])
for v in ("-5", "0"):
    case("simulate", f"n={v}", {"-n": v}, ("-n", "number"))
numbers("simulate", "--box", ("-48", "0"))
numbers("simulate", "--pixel-size", NEG)
numbers("simulate", "--snr", NEG, extra={"--no-noise": None})
files("simulate", "--modes", [("nomodes", ""), ("empty", ".xmd")])
case("simulate", "mode-list-absent", {"--mode-list": "99"}, ("99", "--mode-list"))
case("simulate", "mode-list-text", {"--mode-list": "abc"}, ("abc", "--mode-list"))
numbers("simulate", "--render-factor", ("0", "-1"))
numbers("simulate", "--defocus", ("nan",))
numbers("simulate", "--voltage", ("0", "-200"))
numbers("simulate", "--q0", ("1.5", "-0.1", "nan"))
numbers("simulate", "--cs", ("nan",))
numbers("simulate", "--shift-range", ("-1", "nan"))
numbers("simulate", "--sigma", NEG)
numbers("simulate", "--amplitude-scale", ("nan",))
case("simulate", "out-holds-particles", {"--out": "{S}"}, "sim")
case("simulate", "out-is-the-structure", {"--out": "{AK}"}, "AK.pdb")
case("simulate", "nested-out-bad-box", {"--out": "{O}/new/deep/sim", "--box": "-48"}, "--box")

# ---- align
files("align", "--particles", PARTICLES + [("mixed-boxes", "")])
case("align", "particles-without-ctf", {"--particles": "{S}/noctf.xmd"}, ("ctf", "noctf"))
files("align", "--modes", [("nomodes", ""), ("empty", ".xmd")])
files("align", "--structure", [("missing", ".pdb"), ("empty", ".pdb"), ("garbage", ".pdb")])
case("align", "selection-other-atoms", {"--selection": "ca"}, None)
numbers("align", "--pixel-size", NEG)
case("align", "pixel-size-differs-from-header", {"--pixel-size": "5"}, "pixel")
numbers("align", "--angular-step", ("0", "-5", "nan", "200"))
numbers("align", "--chunk", ("0", "-1"))
numbers("align", "--candidates", ("0",))
numbers("align", "--coarse-iters", ("0",))
numbers("align", "--fine-iters", ("0",))
numbers("align", "--search-amplitude", ("-1", "nan"))
numbers("align", "--search-pairs", ("-1",))
numbers("align", "--amplitude-candidates", ("0",))
numbers("align", "--fine-candidates", ("0",))
numbers("align", "--max-shift", ("-1", "nan"))
case("align", "from-poses-without-angles", {"--particles": "{S}/noangles.xmd",
                                            "--from-poses": ""}, ("noangles.xmd", "angleRot"))
numbers("align", "--cone", ("0", "-5", "nan", "200"), extra={"--from-poses": ""})
numbers("align", "--shift-window", ("-1", "nan"), extra={"--from-poses": ""})
numbers("align", "--local-candidates", ("0",), extra={"--from-poses": ""})
numbers("align", "--outlier-threshold", ("-1", "nan"))
numbers("align", "--pyramid", ("4,8", "x"))
case("align", "mode-list-absent", {"--mode-list": "99"}, ("99", "--mode-list"))
case("align", "mode-list-text", {"--mode-list": "abc"}, ("abc", "--mode-list"))
case("align", "device-unknown", {"--device": "nonsense"}, ("--device", "nonsense"))
case("align", "out-is-the-particles", {"--out": "{S}/particles.xmd"}, "particles.xmd")
case("align", "out-is-the-structure", {"--out": "{REF}/reference.pdb"}, "reference.pdb")
case("align", "out-is-a-folder", {"--out": "{D}/dir.xmd"}, "dir.xmd")
case("align", "nested-out-bad-chunk", {"--out": "{O}/new/deep/al.xmd", "--chunk": "0"},
     "--chunk")

# ---- outliers
files("outliers", "--input", [("missing", ".xmd"), ("empty", ".xmd"), ("zero", "")])
case("outliers", "input-without-amplitudes", {"--input": "{S}/nonma.xmd"},
     ("nonma.xmd", "nmaDisplacements", "amplitude"))
numbers("outliers", "--threshold", NEG)
case("outliers", "out-is-the-input", {"--out": "{S}/particles.xmd"}, "particles.xmd")
case("outliers", "out-is-a-folder", {"--out": "{D}/dir.xmd"}, "dir.xmd")
case("outliers", "nested-out-bad-threshold", {"--out": "{O}/new/k.xmd", "--threshold": "-1"},
     "--threshold")

# ---- train
files("train", "--particles", PARTICLES + [("mixed-boxes", "")])
case("train", "particles-without-labels", {"--particles": "{S}/nonma.xmd"},
     ("nonma.xmd", "nmaDisplacements", "amplitude", "label"))
numbers("train", "--epochs", ("0", "-1"))
numbers("train", "--batch-size", ("0", "-4"))
numbers("train", "--lr", NEG)
numbers("train", "--weight-decay", ("-1", "nan"))
numbers("train", "--val-fraction", ("1.5", "-0.1", "nan"))
numbers("train", "--test-fraction", ("1.0", "-0.1"))
case("train", "val-plus-test-fractions-over-1", {"--val-fraction": "0.6",
                                                  "--test-fraction": "0.6"}, "fraction")
numbers("train", "--patience", ("-1",))
numbers("train", "--input-size", ("0", "-32"))
numbers("train", "--dropout", ("1.5", "-0.1"))
numbers("train", "--mahalanobis", ("-1", "nan"))
numbers("train", "--pixel-size", NEG)
case("train", "pixel-size-differs-from-header", {"--pixel-size": "5"}, "pixel")
case("train", "no-pixel-size-anywhere", {"--particles": "{S}/nohdr.xmd", "--pixel-size": None},
     ("pixel", "nohdr"))
case("train", "mode-list-text", {"--mode-list": "abc"}, ("abc", "--mode-list"))
case("train", "mode-list-more-than-labels", {"--mode-list": "7-12"}, ("--mode-list", "mode"))
files("train", "--init-model", [("missing", ".pt"), ("empty", ".pt"), ("garbage", ".pt")])
case("train", "device-unknown", {"--device": "nonsense"}, ("--device", "nonsense"))
case("train", "out-is-a-file", {"--out": "{AK}"}, "AK.pdb")
case("train", "out-is-the-particles", {"--out": "{S}/particles.xmd"}, "particles.xmd")
case("train", "nested-out-bad-epochs", {"--out": "{O}/new/deep/tr", "--epochs": "0"},
     "--epochs")

# ---- predict
files("predict", "--model", [("missing", ".pt"), ("empty", ".pt"), ("garbage", ".pt")])
case("predict", "model-not-ours", {"--model": "{D}/notours.pt"}, "notours.pt",
     needs=("notours",))
files("predict", "--particles", PARTICLES + [("mixed-boxes", "")])
case("predict", "particles-of-another-box", {"--particles": "{D}/sim40/particles.xmd"},
     ("box", "px", "size"), needs=("sim40",))
numbers("predict", "--batch-size", ("0", "-1"))
numbers("predict", "--chunk", ("0", "-1"))
numbers("predict", "--pixel-size", NEG)
case("predict", "pixel-size-differs", {"--pixel-size": "5"}, "pixel")
case("predict", "pixel-size-differs-from-model", {"--particles": "{S}/nohdr.xmd",
                                                  "--pixel-size": "5"}, ("pixel", "Å/px"))
case("predict", "device-unknown", {"--device": "nonsense"}, ("--device", "nonsense"))
case("predict", "out-is-the-particles", {"--out": "{S}/particles.xmd"}, "particles.xmd")
case("predict", "out-is-the-model", {"--out": "{MODEL}"}, "model.pt")
case("predict", "out-is-a-folder", {"--out": "{D}/dir.xmd"}, "dir.xmd")
case("predict", "nested-out-bad-chunk", {"--out": "{O}/new/deep/p.xmd", "--chunk": "0"},
     "--chunk")

# ---- landscape
files("landscape", "--particles", [("missing", ".xmd"), ("empty", ".xmd"), ("zero", "")])
case("landscape", "particles-without-amplitudes", {"--particles": "{S}/nonma.xmd"},
     ("nonma.xmd", "nmaDisplacements", "amplitude"))
numbers("landscape", "--components", ("0", "-1", "4"))
for v in ("x:y", "1", "3:5", "1:0", "1:5:2", "1:5:-0.1"):
    case("landscape", f"split={v}", {"--split": v}, "--split")
for v in ("1,2,3", "a,b,c,d", "1,2,3,4,5"):
    case("landscape", f"rect={v}", {"--rect": v}, "--rect")
for v in ("1,2,3", "0,0,1,1"):
    case("landscape", f"polygon={v}", {"--polygon": v}, "--polygon")
numbers("landscape", "--kmeans", ("0", "-2"))
case("landscape", "kmeans-more-groups-than-particles", {"--kmeans": "100"}, None)
case("landscape", "select-unparsable", {"--select": "PC1 >"}, ("--select", "PC1 >"))
case("landscape", "select-code", {"--select": "__import__('os').getcwd()"}, None)
case("landscape", "select-unknown-axis", {"--select": "PC9 > 0"}, ("PC9", "--select"))
case("landscape", "select-nothing", {"--select": "PC1 > 1e9"}, None)
case("landscape", "group-below-min-group", {"--kmeans": "2", "--min-group": "1000"},
     ("min-group", "group"))
numbers("landscape", "--frames", ("0", "-1"),
        extra={"--structure": "{REF}/reference.pdb", "--modes": "{REF}"})
case("landscape", "modes-missing", {"--structure": "{REF}/reference.pdb",
                                    "--modes": "{D}/nomodes"}, "nomodes")
files("landscape", "--pca", [("missing", ".npz"), ("empty", ".npz")])
files("landscape", "--also", [("missing", ".xmd"), ("empty", ".xmd")])
case("landscape", "also-other-number-of-modes", {"--also": "{S}/two_modes.xmd"}, "mode")
case("landscape", "out-is-a-file", {"--out": "{AK}"}, "AK.pdb")
case("landscape", "out-is-the-particles", {"--out": "{S}/particles.xmd"}, "particles.xmd")
case("landscape", "nested-out-bad-split", {"--out": "{O}/new/deep/land", "--split": "x:y"},
     "--split")

# ---- reconstruct
files("reconstruct", "--particles", PARTICLES + [("mixed-boxes", "")])
case("reconstruct", "particles-without-angles", {"--particles": "{S}/noangles.xmd"},
     ("noangles.xmd", "angle"))
numbers("reconstruct", "--pixel-size", NEG)
case("reconstruct", "pixel-size-differs-from-header", {"--pixel-size": "5"}, "pixel")
numbers("reconstruct", "--pad", NEG)
numbers("reconstruct", "--shift-scale", ("nan",))
numbers("reconstruct", "--mask-threshold", ("0", "1", "nan"))
numbers("reconstruct", "--mask-dilate", ("-1", "nan"))
numbers("reconstruct", "--soft-edge", ("-1", "nan"))
case("reconstruct", "fewer-than-min-images", {"--min-images": None}, "--min-images")
files("reconstruct", "--images", [("missing", ".xmd"), ("zero", "")])
case("reconstruct", "images-no-common-rows", {"--images": "{S}/otherids.xmd"}, None)
files("reconstruct", "--reference", [("missing", ".mrc"), ("empty", ".mrc")])
case("reconstruct", "reference-other-box", {"--reference": "{D}/ref40.mrc"},
     ("ref40", "box", "shape", "size"))
case("reconstruct", "device-unknown", {"--device": "nonsense"}, ("--device", "nonsense"))
case("reconstruct", "out-is-the-particles", {"--out": "{S}/particles.xmd"}, "particles.xmd")
case("reconstruct", "out-is-the-reference", {"--out": "{MAP}", "--reference": "{MAP}"},
     "ref.mrc")
case("reconstruct", "out-is-a-folder", {"--out": "{D}/dir.mrc"}, "dir.mrc")
case("reconstruct", "nested-out-bad-pad", {"--out": "{O}/new/deep/r.mrc", "--pad": "0"},
     "--pad")

# ---- model-map
files("model-map", "--structure", [("missing", ".pdb"), ("empty", ".pdb"),
                                   ("garbage", ".pdb")])
numbers("model-map", "--box", ("0", "-48", "4"))
numbers("model-map", "--pixel-size", NEG)
numbers("model-map", "--sigma", NEG)
case("model-map", "model-beyond-the-box", {"--box": "16", "--pixel-size": "1"},
     ("box", "extends"))
case("model-map", "selection-matches-nothing", {"--selection": "resname XYZ"}, "selection")
case("model-map", "out-is-the-structure", {"--out": "{AK}"}, "AK.pdb")
case("model-map", "out-is-a-folder", {"--out": "{D}/dir.mrc"}, "dir.mrc")
case("model-map", "nested-out-bad-box", {"--out": "{O}/new/deep/m.mrc", "--box": "0"}, "--box")

# ---- fsc (positional maps)
FSC = "fsc {A} {B} --json {O}/fsc.json"
for name, a, b, expect in [
        ("map1-missing", "{D}/missing.mrc", "{MAP2}", "missing.mrc"),
        ("map2-missing", "{MAP}", "{D}/missing.mrc", "missing.mrc"),
        ("map1-empty", "{D}/empty.mrc", "{MAP2}", "empty.mrc"),
        ("map2-garbage", "{MAP}", "{D}/garbage.mrc", "garbage.mrc"),
        ("map-is-a-folder", "{D}/adir", "{MAP2}", "adir"),
        ("maps-of-different-boxes", "{MAP}", "{D}/ref40.mrc", ("shape", "box", "size")),
        ("no-voxel-size", "{D}/nopix.mrc", "{D}/nopix.mrc", ("pixel", "voxel"))]:
    case("fsc", name, template=FSC.replace("{A}", a).replace("{B}", b), expect=expect)
numbers("fsc", "--pixel-size", NEG)
case("fsc", "png-is-map1", {"--png": "{MAP}"}, "ref.mrc")
case("fsc", "json-is-map2", {"--json": "{MAP2}"}, "ref2.mrc")
case("fsc", "png-is-a-folder", {"--png": "{D}/dir.png"}, "dir.png")
case("fsc", "json-is-a-folder", {"--json": "{D}/dir.json"}, "dir.json")
case("fsc", "nested-json-bad-pixel-size", {"--json": "{O}/new/deep/f.json",
                                           "--pixel-size": "0"}, "--pixel-size")

# ---- evaluate
files("evaluate", "--est", [("missing", ".xmd"), ("empty", ".xmd"), ("zero", "")])
files("evaluate", "--truth", [("missing", ".xmd"), ("empty", ".xmd"), ("zero", "")])
numbers("evaluate", "--pixel-size", NEG)
files("evaluate", "--modes", [("nomodes", ""), ("empty", ".xmd")])
case("evaluate", "no-common-rows", {"--truth": "{S}/otherids.xmd"}, None)
case("evaluate", "json-is-the-est", {"--json": "{S}/particles.xmd"}, "particles.xmd")
case("evaluate", "json-is-a-folder", {"--json": "{D}/dir.json"}, "dir.json")

COUNTS = collections.Counter(c.cmd for c in CASES)
# one case per command also runs as a real process (progress on); the
# "all-unusable" ones fail after progress has been shown
SUBPROCESS = ["nma-cutoff=0", "pseudoatoms-max-atoms=0", "simulate-n=-5",
              "align-particles-all-unusable", "align-pixel-size-differs-from-header",
              "outliers-input-zero", "train-epochs=0", "predict-particles-all-unusable",
              "landscape-split=x:y", "reconstruct-pad=0", "model-map-box=-48",
              "fsc-maps-of-different-boxes", "evaluate-est-zero"]
BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "duplicate case ids"
assert all(s in BY_ID for s in SUBPROCESS)


def _require(fx, needs):
    missing = [fx.failed[n] for n in needs if n in fx.failed]
    if missing:
        pytest.fail("; ".join(missing))


def _check_case(fx, c, rc, out, err):
    problems = leftovers(fx.root, fx._before, fx.saved)
    check_error(c.cmd, rc, out, err, c.expect)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# tests
def test_case_counts():
    """The table covers every command, >= 100 cases in all (run with -s to see
    the counts)."""
    print(f"\nbad-input cases: {len(CASES)} in all; " +
          ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))
    assert set(COUNTS) == set(BASE)
    assert len(CASES) >= 100
    assert min(COUNTS.values()) >= 8


RECORD_KEYS = {"stage", "command", "cwd", "config", "version", "started", "ended", "seconds",
               "status"}


def test_base_commands_succeed(fx, capfd, monkeypatch, tmp_path):
    """Every BASE command line works on the fixture (exit 0, output written),
    so a case's exit code 2 comes from the option it changes; each writes its
    run record beside its outputs (evaluate only with --json): the command
    line, the config, the version, the times, status finished."""
    import json
    from deephemnma.cli import build_parser
    from deephemnma.version import __version__
    _require(fx, sorted({n for v in NEEDS.values() for n in v}))
    failures = []
    records = {}
    for cmd, tpl in BASE.items():
        argv = shlex.split(tpl.format(**dict(fx.paths, O=str(tmp_path))))
        rc, out, err = run_inprocess(argv, capfd, monkeypatch, quiet=True)
        if rc != 0:
            failures.append(f"{cmd}: exit {rc}: {(err or out)[-800:]}")
            continue
        args = build_parser().parse_args(argv)
        module = sys.modules[args._main.__module__]
        cfg = module.config(args)
        path = module.stage.run.record_path(cfg)
        records[cmd] = path
        if path is None:
            continue
        with open(path) as f:
            rec = json.load(f)
        assert set(rec) == RECORD_KEYS, (cmd, sorted(rec))
        assert rec["command"] == ["deephemnma", *argv], (cmd, rec["command"])
        assert rec["stage"] == module.stage.__name__.rsplit(".", 1)[-1]
        assert rec["config"] == json.loads(json.dumps(cfg.to_dict(), default=str)), cmd
        assert rec["version"] == __version__ and rec["status"] == "finished", rec
        assert rec["started"] <= rec["ended"] and rec["seconds"] >= 0, rec
    assert not failures, "\n".join(failures)
    assert records["evaluate"] is None
    beside = {c: os.path.relpath(p, tmp_path) for c, p in records.items() if p}
    assert beside == {"nma": "nma/run.json", "pseudoatoms": "pa.run.json",
                      "simulate": "sim/run.json", "align": "al.run.json",
                      "outliers": "kept.run.json", "train": "tr/run.json",
                      "predict": "pred.run.json", "landscape": "land/run.json",
                      "reconstruct": "rec.run.json", "model-map": "mm.run.json",
                      "fsc": "fsc.run.json", "refine": "ref.run.json"}, beside


@pytest.mark.parametrize("cid", [c.id for c in CASES])
def test_bad_input(cid, fx, capfd, monkeypatch):
    c = BY_ID[cid]
    _require(fx, c.needs)
    fx._before = snapshot(fx.root)
    rc, out, err = run_inprocess(fx.argv(c.template), capfd, monkeypatch)
    _check_case(fx, c, rc, out, err)


@pytest.mark.parametrize("cid", SUBPROCESS)
def test_bad_input_process(cid, fx):
    """The same cases through ``python -m deephemnma`` (a real exit code and
    stderr; progress on)."""
    c = BY_ID[cid]
    _require(fx, c.needs)
    fx._before = snapshot(fx.root)
    rc, out, err = run_subprocess(fx.argv(c.template), cwd=fx.paths["O"])
    _check_case(fx, c, rc, out, err)


# --------------------------------------------------------------------------
# rows with a non-finite value: rejected alone, exit 0
ROWS = [
    # (command line, itemIds that must be rejected, itemIds that may be)
    ("align", "align --particles {S}/bad_rows.xmd --modes {REF} --structure {REF}/reference.pdb "
              "--pixel-size 2.6 --out {O}/rows/al.xmd --angular-step 30 --coarse-iters 2 "
              "--fine-iters 1 --chunk 4", {5, 7}, {3}),
    ("predict", "predict --model {MODEL} --particles {S}/bad_rows.xmd --out {O}/rows/pred.xmd "
                "--pixel-size 2.6", {5}, {3, 7}),
    ("train", "train --particles {S}/bad_rows.xmd --out {O}/rows/tr --epochs 1 "
              "--input-size 32 --batch-size 8 --pixel-size 2.6", {3, 5}, {7}),
    ("reconstruct", "reconstruct --particles {S}/bad_rows.xmd --out {O}/rows/rec.mrc "
                    "--pixel-size 2.6 --min-images 5", {3, 5, 7}, set()),
    ("outliers", "outliers --input {S}/abc_nma.xmd --out {O}/rows/kept.xmd", {4}, set()),
    ("landscape", "landscape --particles {S}/abc_nma.xmd --out {O}/rows/land", {4}, set()),
]


def _rejected_ids(folder):
    """itemIds listed in every '*rejected*.xmd' under ``folder``."""
    from deephemnma.io.metadata import read_metadata
    ids, found = set(), []
    for d, _, names in os.walk(folder):
        for n in names:
            if "rejected" in n and n.endswith(".xmd"):
                found.append(os.path.join(d, n))
                ids |= {int(i) for i in read_metadata(found[-1])["itemId"]}
    return ids, found


@pytest.mark.parametrize("cmd,template,must,may", ROWS, ids=[r[0] for r in ROWS])
def test_row_rejected(cmd, template, must, may, fx, capfd, monkeypatch):
    """'abc' in an angle column, a NaN image, a NaN defocus, 'abc' in an
    amplitude: that row is left out (listed in a rejected .xmd with the
    others' results written), exit 0, counted in the summary; no traceback,
    no temporary files; the outputs hold finite values only."""
    from deephemnma.io.metadata import read_metadata
    _require(fx, NEEDS[cmd] + ("derived",))
    rows = os.path.join(fx.paths["O"], "rows")
    try:
        rc, out, err = run_inprocess(fx.argv(template), capfd, monkeypatch)
        assert "Traceback" not in out + err, (out + err)[-3000:]
        assert rc == 0, f"exit {rc}: {err[-1500:]}"
        ids, found = _rejected_ids(rows)
        assert found, f"no rejected .xmd written under {rows}"
        assert must <= ids <= must | may, f"rejected itemIds {sorted(ids)}, expected " \
                                          f"{sorted(must)} (+ maybe {sorted(may)})"
        assert re.search(r"left out|reject", out + err, re.I), \
            f"the summary does not count the rejected rows:\n{out}"
        made = [os.path.join(d, n) for d, _, ns in os.walk(rows) for n in ns]
        stray = [m for m in made if m.endswith((".part", ".tmp")) or ".parts" in m
                 or os.path.basename(m).startswith(".")]
        assert not stray, f"temporary files left: {stray}"
        outputs = [m for m in made if m.endswith(".xmd") and "rejected" not in m]
        for m in outputs:
            t = read_metadata(m)
            if "itemId" in t and "nmaDisplacements" in t and len(t) > 3:
                assert not (set(int(i) for i in t["itemId"]) & ids), \
                    f"{m} holds rejected rows"
            for col in ("angleRot", "shiftX", "nmaDisplacements"):
                if col in t and len(t):
                    assert np.isfinite(np.asarray(t[col], np.float64)).all(), \
                        f"{m}: non-finite {col}"
        if cmd == "reconstruct":
            from deephemnma.io.stacks import read_volume
            vol, _ = read_volume(os.path.join(rows, "rec.mrc"))
            assert np.isfinite(vol).all() and np.abs(vol).max() > 0
    finally:
        shutil.rmtree(rows, ignore_errors=True)


def test_evaluate_abc_angle_row(fx, capfd, monkeypatch):
    """evaluate with 'abc' in an angle of the estimate: no error, no traceback,
    finite errors for the other rows."""
    _require(fx, NEEDS["evaluate"])
    argv = fx.argv("evaluate --est {S}/abc_angle.xmd --truth {S}/particles.xmd "
                   "--pixel-size 2.6")
    rc, out, err = run_inprocess(argv, capfd, monkeypatch)
    assert "Traceback" not in out + err, (out + err)[-3000:]
    assert rc == 0, f"exit {rc}: {err[-1500:]}"
    assert "nan" not in out.lower(), f"NaN in the evaluation:\n{out}"


def test_train_rerun_more_epochs(fx, capfd, monkeypatch, tmp_path):
    """`train --epochs N` on a folder with no previous run, and again after a
    run of fewer epochs: exit 0 (starts / continues) or a one-line error,
    never a traceback; a refused run leaves nothing behind. The removed
    `--resume` is an unknown option (exit 2)."""
    _require(fx, NEEDS["train"])
    base = ["train", "--particles", os.path.join(fx.paths["S"], "particles.xmd"),
            "--input-size", "32", "--batch-size", "8", "--pixel-size", "2.6",
            "--out", str(tmp_path / "tr")]
    # no previous run
    before = snapshot(tmp_path)
    rc, out, err = run_inprocess(base + ["--resume", "--epochs", "2"], capfd, monkeypatch,
                                 quiet=True)
    assert rc == 2 and "unrecognized arguments: --resume" in err, (rc, err[-1500:])
    assert snapshot(tmp_path) == before, "a refused --resume left files behind"
    rc, out, err = run_inprocess(base + ["--epochs", "2"], capfd, monkeypatch, quiet=True)
    assert "Traceback" not in out + err, (out + err)[-3000:]
    if rc == 2:
        check_error("train", rc, out, err)
        assert snapshot(tmp_path) == before, "a refused run left files behind"
    else:
        assert rc == 0, f"exit {rc}: {err[-1500:]}"
        shutil.rmtree(tmp_path / "tr")
    rc, out, err = run_inprocess(base + ["--epochs", "1"], capfd, monkeypatch, quiet=True)
    assert rc == 0, f"first run: exit {rc}: {err[-1500:]}"
    rc, out, err = run_inprocess(base + ["--epochs", "2"], capfd, monkeypatch, quiet=True)
    assert "Traceback" not in out + err, (out + err)[-3000:]
    assert rc in (0, 2), f"exit {rc}: {err[-1500:]}"
    if rc == 2:
        check_error("train", rc, out, err)
    assert os.path.exists(tmp_path / "tr" / "model.pt")
    leftover = [n for n in os.listdir(tmp_path / "tr") if n.startswith(".") or
                n.endswith((".tmp", ".part"))]
    assert not leftover, leftover


# --------------------------------------------------------------------------
# refine, appended: its cases join BASE/NEEDS/CASES/COUNTS/BY_ID
# here and run in their own parametrized tests (the table's tests above were
# parametrized before these lines ran)
BASE["refine"] = ("refine --particles {S}/particles.xmd --modes {REF} --structure "
                  "{REF}/reference.pdb --pixel-size 2.6 --out {O}/ref.xmd --refine-fine-iters 2 "
                  "--chunk 4")
NEEDS["refine"] = ("nma", "sim", "derived")
_FIRST_REFINE = len(CASES)
files("refine", "--particles", PARTICLES + [("mixed-boxes", "")])
case("refine", "particles-without-ctf", {"--particles": "{S}/noctf.xmd"}, ("ctf", "noctf"))
case("refine", "particles-without-angles", {"--particles": "{S}/noangles.xmd"},
     ("noangles.xmd", "angleRot"))
case("refine", "amplitudes-of-other-modes", {"--particles": "{S}/two_modes.xmd"},
     ("2 amplitudes", "3 modes"))
files("refine", "--modes", [("nomodes", ""), ("empty", ".xmd")])
files("refine", "--structure", [("missing", ".pdb"), ("empty", ".pdb")])
numbers("refine", "--pixel-size", NEG)
case("refine", "pixel-size-differs-from-header", {"--pixel-size": "5"}, "pixel")
numbers("refine", "--refine-fine-iters", ("0", "-1"))
numbers("refine", "--refine-coarse-iters", ("-1",))
numbers("refine", "--chunk", ("0", "-1"))
numbers("refine", "--outlier-threshold", ("-1", "nan"))
numbers("refine", "--pyramid", ("4,8", "x"))
case("refine", "mode-list-absent", {"--mode-list": "99"}, ("99", "--mode-list"))
case("refine", "device-unknown", {"--device": "nonsense"}, ("--device", "nonsense"))
case("refine", "out-is-the-particles", {"--out": "{S}/particles.xmd"}, "particles.xmd")
case("refine", "out-is-a-folder", {"--out": "{D}/dir.xmd"}, "dir.xmd")
case("refine", "nested-out-bad-chunk", {"--out": "{O}/new/deep/r.xmd", "--chunk": "0"},
     "--chunk")
REFINE_CASES = CASES[_FIRST_REFINE:]
COUNTS.update(c.cmd for c in REFINE_CASES)
BY_ID.update({c.id: c for c in REFINE_CASES})
assert len(BY_ID) == len(CASES), "duplicate case ids"


@pytest.mark.parametrize("cid", [c.id for c in REFINE_CASES])
def test_refine_bad_input(cid, fx, capfd, monkeypatch):
    test_bad_input(cid, fx, capfd, monkeypatch)


def test_refine_bad_input_process(fx):
    """One refine case through ``python -m deephemnma``."""
    test_bad_input_process("refine-particles-without-angles", fx)


def test_refine_row_rejected(fx, capfd, monkeypatch):
    """refine on the rows with an 'abc' angle (3), a NaN image (5), a NaN
    defocus (7), and on an 'abc' amplitude (4): those rows alone are left out."""
    test_row_rejected("refine", "refine --particles {S}/bad_rows.xmd --modes {REF} --structure "
                      "{REF}/reference.pdb --pixel-size 2.6 --out {O}/rows/ref.xmd "
                      "--refine-fine-iters 1 --chunk 4", {3, 5, 7}, set(), fx, capfd, monkeypatch)
    test_row_rejected("refine", "refine --particles {S}/abc_nma.xmd --modes {REF} --structure "
                      "{REF}/reference.pdb --pixel-size 2.6 --out {O}/rows/ref.xmd "
                      "--refine-fine-iters 1 --chunk 4", {4}, set(), fx, capfd, monkeypatch)
