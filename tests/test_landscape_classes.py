"""Discrete classes in the landscape (the paper's Fig. 8: the landscape beside
the classes of a discrete classification): a class column colours the
density plot, counts the particles per class and group (classes.tsv, the
summary) and, with --by-class, makes the groups; metadata label aliases;
one-line errors; the Scipion form (Classes or a Class attribute, matched by
particle id) and the viewer's drawing."""
import os

import numpy as np
import pytest

from deephemnma.cli import main
from deephemnma.core import landscape as L
from deephemnma.io.metadata import Table, find_label, read_metadata, write_xmd
from deephemnma.stages import landscape

CENTRES = np.array([[-120.0, 0, 0], [0, 90, 0], [120, 0, 0]])


def _clusters(n=240, seed=0, mislabel=0.0):
    """Amplitudes (n, 3) in three clusters, the true cluster (1..3) of each
    and its label (the true one, a fraction ``mislabel`` changed)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(1, 4, n)
    q = CENTRES[true - 1] + rng.normal(size=(n, 3)) * [20, 20, 5]
    label = true.copy()
    flip = rng.random(n) < mislabel
    label[flip] = 1 + (true[flip] % 3)
    return q, true, label


def _xmd(path, q, columns=None, first_id=1):
    n = len(q)
    t = Table({"image": np.array([f"{i + 1:06d}@s.mrcs" for i in range(n)], dtype=object),
               "itemId": np.arange(first_id, first_id + n), "nmaDisplacements": q})
    for k, v in (columns or {}).items():
        t[k] = v
    write_xmd(path, t)
    return str(path)


def _tsv(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f]


# --------------------------------------------------------------------------
# labels, codes, drawing
def test_class_column_found_under_its_aliases():
    t = Table({"itemId": np.arange(3), "ref": np.array([1, 2, 1]), "angleRot": np.zeros(3)})
    for name in ("ref", "_rlnClassNumber", "rlnClassNumber", "_xmipp_ref", "classId",
                 "_classId", "class", "REF"):
        assert find_label(t, name) == "ref", name
    assert find_label(t, "rlnAngleRot") == "angleRot"
    assert find_label(t, "_xmipp_angleRot") == "angleRot"
    assert find_label(t, "foo") is None and find_label(t, "_") is None
    t2 = Table({"classId": np.array([4, 5]), "rlnClassNumber": np.array([7, 8])})
    assert find_label(t2, "rlnClassNumber") == "rlnClassNumber"   # the exact name first
    assert find_label(t2, "ref") == "rlnClassNumber"               # its RELION name
    assert find_label(t2, "class") == "classId"


def test_class_codes_numbers_then_texts_missing_apart():
    codes, keys = L.class_codes(np.array(["2", 10, "open", 2.0, "nan", "", "1", "closed"],
                                         dtype=object))
    assert keys == [1, 2, 10, "closed", "open"]
    assert codes.tolist() == [1, 2, 4, 1, -1, -1, 0, 3]
    assert [L.class_name(k) for k in keys] == ["class 1", "class 2", "class 10", "closed",
                                               "open"]
    assert len(set(L.class_colours(30))) == 30 and len(L.class_colours(3)) == 3


def test_draw_classes_one_legend_entry_per_class():
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    codes = np.array([0, 1, 1, 2, 2, 2, -1])
    x = np.arange(7.0)
    L.draw_classes(ax, x, x, codes, ["A", "B", "C"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A (1)", "B (2)", "C (3)"]
    dots = ax.collections[0]
    assert len(dots.get_offsets()) == 6                   # the unclassified point is not drawn
    assert len({tuple(c) for c in dots.get_facecolors()}) == 3


def test_class_table_and_agreement():
    codes = np.array([0, 0, 0, 1, 1, 1, 1])
    groups = np.array([1, 1, 0, 0, 0, 0, -1])
    rows = L.class_table(codes, ["a", "b"], groups)
    assert rows == [["class", "group 1", "group 2", "no group", "total"],
                    ["a", 1, 2, 0, 3], ["b", 3, 0, 1, 4], ["total", 4, 2, 1, 7]]
    assert L.class_table(codes, ["a", "b"]) == [["class", "particles", "%"], ["a", 3, "42.9"],
                                                ["b", 4, "57.1"], ["total", 7, "100.0"]]
    ari, matched = L.class_agreement(codes, groups)
    assert matched == pytest.approx(5 / 6) and 0 < ari < 1
    assert L.class_agreement(codes, 1 - codes) == (1.0, 1.0)       # names do not matter


# --------------------------------------------------------------------------
# the command
def test_command_colours_counts_and_compares(tmp_path, capsys):
    q, true, label = _clusters(mislabel=0.1)
    src = _xmd(tmp_path / "p.xmd", q, {"ref": label})
    out = str(tmp_path / "land")
    assert main(["landscape", "--particles", src, "--out", out, "--kmeans", "3",
                 "--class-column", "_rlnClassNumber"]) == 0
    text = capsys.readouterr().out
    files = landscape.Outputs(out)
    rows = _tsv(files.class_table)
    assert rows[0] == ["class", "group 1", "group 2", "group 3", "total"]
    assert [r[0] for r in rows[1:]] == ["class 1", "class 2", "class 3", "total"]
    assert [int(r[-1]) for r in rows[1:4]] == [int((label == k).sum()) for k in (1, 2, 3)]
    # each k-means group is one true cluster: its row of the table counts the labels
    for k in files.groups():
        ids = read_metadata(files.group(k))["itemId"]
        got = [int(r[k]) for r in rows[1:4]]
        assert got == [int((label[ids - 1] == c).sum()) for c in (1, 2, 3)]
    assert f"particles per class (ref) and group -> {files.class_table}" in text
    assert "  class 1 " in text and "  total " in text
    line = [x for x in text.splitlines() if x.startswith("groups vs classes")][0]
    matched = float(line.split("; ")[1].split("%")[0])
    assert 85 < matched < 95           # 10 % mislabelled, the clusters themselves recovered
    assert read_metadata(files.landscape)["ref"].tolist() == label.tolist()
    # the plot coloured by class differs from the plain one
    coloured = open(files.density, "rb").read()
    assert main(["landscape", "--particles", src, "--out", str(tmp_path / "plain"),
                 "--kmeans", "3"]) == 0
    assert open(landscape.Outputs(str(tmp_path / "plain")).density, "rb").read() != coloured
    assert not os.path.exists(landscape.Outputs(str(tmp_path / "plain")).class_table)


def test_command_without_groups_counts_classes(tmp_path, capsys):
    q, _, label = _clusters(60)
    names = np.array(["open", "closed", "half"], dtype=object)[label - 1]
    src = _xmd(tmp_path / "p.xmd", q, {"classId": names})
    out = str(tmp_path / "land")
    assert main(["landscape", "--particles", src, "--out", out, "--class-column",
                 "classId"]) == 0
    rows = _tsv(landscape.Outputs(out).class_table)
    assert rows[0] == ["class", "particles", "%"]
    assert {r[0]: int(r[1]) for r in rows[1:]} == {
        "closed": int((label == 2).sum()), "half": int((label == 3).sum()),
        "open": int((label == 1).sum()), "total": 60}
    assert "groups vs classes" not in capsys.readouterr().out


def test_groups_by_class(tmp_path, capsys):
    q, _, label = _clusters(120, seed=3)
    a = _xmd(tmp_path / "a.xmd", q[:90], {"ref": label[:90]})
    b = _xmd(tmp_path / "b.xmd", q[90:], {"rlnClassNumber": label[90:]}, first_id=1001)
    out = str(tmp_path / "land")
    assert main(["landscape", "--particles", a, "--also", b, "--out", out, "--by-class",
                 "--class-column", "ref", "--min-group", "5"]) == 0
    files = landscape.Outputs(out)
    assert files.groups() == [1, 2, 3]
    ids = np.concatenate([np.arange(1, 91), np.arange(1001, 1031)])
    for k in (1, 2, 3):
        g = read_metadata(files.group(k))
        assert sorted(g["itemId"]) == sorted(ids[label == k])     # both sets' rows
        assert set(g["ref"]) == {k}
    table = read_metadata(files.groups_table)
    assert table["classCount"].tolist() == [int((label == k).sum()) for k in (1, 2, 3)]
    rows = _tsv(files.class_table)
    assert [[int(c) for c in r[1:4]] for r in rows[1:4]] == \
        np.diag([(label == k).sum() for k in (1, 2, 3)]).tolist()
    text = capsys.readouterr().out
    assert f"groups: 1 (class 1): {(label == 1).sum()} particles" in text
    assert "groups vs classes" not in text         # the groups are the classes


@pytest.mark.parametrize("args, message", [
    (["--class-column", "foo"], "--class-column foo: no such column in {src} (columns: "
                                "image, itemId, ref, rnd, gap)"),
    (["--class-column", "rnd"], "--class-column rnd: 60 distinct values in {src}, more than "
                                "50: not a class label"),
    (["--class-column", "gap"], "--class-column gap: 1 particle(s) of {src} have no class "
                                "(empty or nan)"),
    (["--by-class"], "--by-class needs --class-column (the column whose classes become the "
                     "groups)"),
    (["--class-column", " "], "--class-column: give a column name (e.g. ref, rlnClassNumber)"),
    (["--by-class", "--class-column", "ref"], "group 2 (class 2) has 1 particles, fewer than "
                                              "--min-group 10"),
])
def test_errors_one_line_no_output(tmp_path, capsys, args, message):
    q, _, label = _clusters(60)
    label = np.where(np.arange(60) == 5, 2, np.where(label == 2, 1, label))   # class 2: one
    gap = np.ones(60)
    gap[7] = np.nan
    src = _xmd(tmp_path / "p.xmd", q, {"ref": label, "rnd": np.arange(60) * 1.5, "gap": gap})
    out = tmp_path / "land"
    assert main(["landscape", "--particles", src, "--out", str(out)] + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.format(src=src) in err, err
    assert not out.exists()


def test_second_set_without_the_class_column(tmp_path, capsys):
    q, _, label = _clusters(60)
    a = _xmd(tmp_path / "a.xmd", q, {"ref": label})
    b = _xmd(tmp_path / "b.xmd", q, first_id=101)
    assert main(["landscape", "--particles", a, "--also", b, "--out", str(tmp_path / "l"),
                 "--class-column", "ref"]) == 2
    assert f"--class-column ref: no such column in {b}" in capsys.readouterr().err


def test_by_class_is_one_grouping_among_the_others(tmp_path, capsys):
    q, _, label = _clusters(60)
    src = _xmd(tmp_path / "p.xmd", q, {"ref": label})
    with pytest.raises(SystemExit) as e:
        main(["landscape", "--particles", src, "--out", str(tmp_path / "l"), "--by-class",
              "--kmeans", "2", "--class-column", "ref"])
    assert e.value.code == 2
    assert "argument --kmeans: not allowed with argument --by-class" in capsys.readouterr().err
    with pytest.raises(landscape.InputError, match="give at most one grouping option"):
        landscape.Config(particles=src, out=str(tmp_path / "l"), by_class=True, kmeans=2,
                         class_column="ref").validate()


# --------------------------------------------------------------------------
# Scipion: the form, the classes matched by id, the viewer
def _scipion_particles(path, q, label=None):
    import pwem.objects as emobj
    import pyworkflow.object as pwobj
    parts = emobj.SetOfParticles(filename=str(path))
    parts.setSamplingRate(2.0)
    for k in range(len(q)):
        p = emobj.Particle(location=(k + 1, "stack.mrcs"))
        p.setObjId(k + 1)
        p._xmipp_nmaDisplacements = pwobj.CsvList(pType=float)
        p._xmipp_nmaDisplacements.set([float(x) for x in q[k]])
        if label is not None:
            p._rlnClassNumber = pwobj.Integer(int(label[k]))
        parts.append(p)
    parts.write()
    return parts


def _scipion_classes(path, parts, label, skip=()):
    """A SetOfClasses3D of ``parts``: class c holds the particles labelled c
    (those of ``skip`` in none)."""
    import pwem.objects as emobj
    classes = emobj.SetOfClasses3D(filename=str(path))
    classes.setImages(parts)
    for c in sorted(set(label.tolist())):
        cls = emobj.Class3D()
        cls.setObjId(int(c))
        classes.append(cls)
        for p in parts.iterItems(orderBy="id"):
            if label[p.getObjId() - 1] == c and p.getObjId() not in skip:
                cls.append(p.clone())
        classes.update(cls)
    classes.write()
    return classes


@pytest.fixture
def scipion_run(tmp_path):
    pytest.importorskip("pwem")
    q, _, label = _clusters(90, seed=4)
    parts = _scipion_particles(tmp_path / "parts.sqlite", q, label)
    classes = _scipion_classes(tmp_path / "classes.sqlite", parts, label, skip={3, 4})
    return q, label, parts, classes


def test_protocol_classes_by_id_groups_and_summary(scipion_run, tmp_path, monkeypatch):
    from deephemnma import protocols as P
    from deephemnma.protocols import protocol_landscape as PL
    q, label, parts, classes = scipion_run
    land = P.DeepHEMNMAProtLandscape(grouping=PL.BY_CLASS, reconstruct=False)
    land.inputParticles.set(parts)
    assert land._validate() == ["*Groups* 'classes' needs the particles' classes: give "
                                "*Classes (optional)* or *Class attribute (optional)*"]
    land.inputClasses.set(classes)
    assert land._validate() == [] and land.maxGroups() == 4       # 3 classes, unclassified
    assert land.getPossibleOutputs()[:5] == ["outputParticles"] + [
        f"outputGroup{k:02d}" for k in range(1, 5)]
    land.classAttribute.set("_rlnClassNumber")
    assert land._validate() == ["give *Classes (optional)* or *Class attribute (optional)*, "
                                "not both"]
    land.inputClasses.set(None)
    land.classAttribute.set("_rlnClassNumbr")
    assert land._validate() == ["*Class attribute (optional)* _rlnClassNumbr: the particles "
                                "have no such attribute (e.g. _rlnClassNumber, _xmipp_ref, "
                                "_classId)"]
    # the run: classes matched by particle id; particles 3 and 4 are in no class
    land.classAttribute.set("")
    land.inputClasses.set(classes)
    land.setWorkingDir(str(tmp_path / "run"))
    os.makedirs(land._getExtraPath())
    monkeypatch.chdir(tmp_path)
    land.landscapeStep()
    files = land.landscapeOutputs()
    t = read_metadata(files.landscape)
    expect = np.array([str(c) for c in label], dtype=object)
    expect[2:4] = "unclassified"
    assert [str(v) for v in t[PL.CLASS_COLUMN]] == expect.tolist()
    assert files.groups() == [1, 2, 3, 4]
    assert read_metadata(files.group(4))["itemId"].tolist() == [3, 4]
    rows = land.classTable()
    assert rows[0] == ["class", "group 1", "group 2", "group 3", "group 4", "total"]
    assert rows[-2] == ["unclassified", "0", "0", "0", "2", "2"]
    land.outputParticles = parts              # what _summary needs of a finished run
    summary = land._summary()
    assert any(line.startswith("Particles per class and group") for line in summary)
    assert any(line.split()[:2] == ["class", "1"] for line in summary)
    # the same classes from the particles' attribute: no one unclassified
    land.inputClasses.set(None)
    land.classAttribute.set("rlnClassNumber")
    assert land._validate() == []
    land.landscapeStep()
    assert land.landscapeOutputs().groups() == [1, 2, 3]
    assert land.classTable()[-1][-1] == "90"


def test_protocol_class_attribute_with_too_many_values(scipion_run, tmp_path, monkeypatch):
    from deephemnma import protocols as P
    from deephemnma.protocols.base import DeepHEMNMAError
    q, label, parts, _ = scipion_run
    land = P.DeepHEMNMAProtLandscape(grouping=0, reconstruct=False, classAttribute="_objId")
    land.inputParticles.set(parts)
    land.setWorkingDir(str(tmp_path / "run"))
    os.makedirs(land._getExtraPath())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeepHEMNMAError) as e:
        land.landscapeStep()
    msg = str(e.value)
    assert "the particles' classes (from *Classes* or *Class attribute*) ref: 90 distinct " \
           "values" in msg and "--" not in msg


def test_viewer_colours_by_class_and_shows_the_table(scipion_run, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from deephemnma import protocols as P
    from deephemnma.viewers import DeepHEMNMALandscapeViewer
    q, label, parts, classes = scipion_run
    land = P.DeepHEMNMAProtLandscape(grouping=3, kmeans=3, reconstruct=False)
    land.inputParticles.set(parts)
    land.inputClasses.set(classes)
    land.setWorkingDir(str(tmp_path / "run"))
    os.makedirs(land._getExtraPath())
    monkeypatch.chdir(tmp_path)
    land.landscapeStep()

    class Project:
        folder = str(tmp_path)

        def getTmpPath(self, *p):
            return os.path.join(self.folder, *p)

    try:
        v = DeepHEMNMALandscapeViewer(project=Project(), protocol=land)
        v.setProtocol(land)
        names = [n for n, _ in v._definition.iterAllParams() if n not in ("runName", "runMode")]
        assert names[:3] == ["showLandscape", "colourByClass", "showClassTable"]
        shows = v._getVisualizeDict()
        fig = shows["showLandscape"]("showLandscape")[0].fig
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        n1, n2, n3 = (int((label == k).sum() - (label[2:4] == k).sum()) for k in (1, 2, 3))
        assert legend[1:] == [f"class 1 ({n1})", f"class 2 ({n2})", f"class 3 ({n3})",
                              "unclassified (2)"]
        v.colourByClass.set(False)
        fig = shows["showLandscape"]("showLandscape")[0].fig
        assert len([t for t in fig.axes[0].get_legend().get_texts()]) == 1   # density only
        table = shows["showClassTable"]("showClassTable")[0].fig
        cells = {(r, c): cell.get_text().get_text()
                 for (r, c), cell in table.axes[0].tables[0].get_celld().items()}
        assert cells[(0, 0)] == "class" and cells[(5, 0)] == "total"
        assert cells[(5, 4)] == "90"
    finally:
        plt.close("all")
