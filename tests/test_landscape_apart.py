"""A second set placed in the same landscape and drawn apart (the paper's
combined space: network-predicted + HEMNMA-labelled particles)."""
import numpy as np

from deephemnma.io.metadata import Table, read_metadata, write_xmd
from deephemnma.stages import landscape


def _set(path, q, first_id):
    n = len(q)
    write_xmd(path, Table({"image": np.array([f"{i + 1:06d}@s.mrcs" for i in range(n)],
                                             dtype=object),
                           "itemId": np.arange(first_id, first_id + n),
                           "nmaDisplacements": q}))
    return str(path)


def test_second_set_is_placed_in_one_pca_and_drawn_apart(tmp_path):
    rng = np.random.default_rng(0)
    q1 = rng.normal(size=(300, 3)) * [80, 20, 5]
    q2 = rng.normal(size=(100, 3)) * [80, 20, 5] + [150, 0, 0]
    q2[3] = np.nan                                   # left out alone
    a, b = _set(tmp_path / "net.xmd", q1, 1), _set(tmp_path / "hem.xmd", q2, 1001)
    cfg = landscape.Config(particles=a, also=b, also_label="HEMNMA-labelled",
                           out=str(tmp_path / "land"), split=(1, 60, 0.02))
    out = landscape.run(cfg, progress=False)
    assert out.n_particles == 399 and out.n_also == 99 and out.n_rejected == 1
    t = read_metadata(out.landscape)
    second = np.asarray(t["source"]) == "hem.xmd"
    assert second.sum() == 99 and set(t["itemId"][second]) == set(range(1001, 1101)) - {1004}
    # one PCA of both sets: the second set (shifted along mode 7) sits at high PC1
    pc1 = np.abs(t["PC1"])
    assert abs(t["PC1"][second].mean() - t["PC1"][~second].mean()) > 100 and pc1.max() > 100
    assert any("99 from the second set (HEMNMA-labelled), drawn apart" in line
               for line in landscape.summary(out, cfg))
    # groups hold particles of both sets, each row keeping its source
    sources = set()
    for k in out.groups():
        sources |= set(read_metadata(out.group(k))["source"])
    assert sources == {"net.xmd", "hem.xmd"}
    # the plot with the set drawn apart differs from the one without
    with_apart = open(out.density, "rb").read()
    out2 = landscape.run(landscape.Config(particles=a, out=str(tmp_path / "land2")),
                         progress=False)
    assert out2.n_also == 0 and len(with_apart) > 5000
    assert open(out2.density, "rb").read() != with_apart


def test_command_names_the_second_set(tmp_path, capsys):
    """``landscape --also B --also-label NAME``: the summary counts B's
    particles under NAME."""
    from deephemnma.cli import main
    rng = np.random.default_rng(1)
    a = _set(tmp_path / "net.xmd", rng.normal(size=(60, 3)) * [80, 20, 5], 1)
    b = _set(tmp_path / "hem.xmd", rng.normal(size=(40, 3)) * [80, 20, 5], 1001)
    assert main(["landscape", "--particles", a, "--also", b, "--also-label", "HEMNMA",
                 "--out", str(tmp_path / "land")]) == 0
    assert "of which 40 from the second set (HEMNMA), drawn apart" in capsys.readouterr().out


def _scipion_set(path, n, n_modes=3, pixel_size=2.0, first_id=1):
    import pwem.objects as emobj
    import pyworkflow.object as pwobj
    parts = emobj.SetOfParticles(filename=str(path))
    parts.setSamplingRate(pixel_size)
    for k in range(n):
        p = emobj.Particle(location=(k + 1, "stack.mrcs"))
        p.setObjId(first_id + k)
        p._xmipp_nmaDisplacements = pwobj.CsvList(pType=float)
        p._xmipp_nmaDisplacements.set([float(k + j) for j in range(n_modes)])
        parts.append(p)
    parts.write()
    return parts


def test_protocol_checks_the_set_shown_apart(tmp_path):
    """The landscape form refuses a second set it cannot place beside the
    first (other modes, other pixel size), and counts it in the groups."""
    from deephemnma import protocols as P
    first = _scipion_set(tmp_path / "a.sqlite", 60)
    land = P.DeepHEMNMAProtLandscape(grouping=1, minGroupSize=50, reconstruct=False)
    land.inputParticles.set(first)
    assert land._validate() == [] and land.maxGroups() == 1
    land.inputParticlesApart.set(_scipion_set(tmp_path / "b.sqlite", 60, first_id=101))
    assert land._validate() == [] and land.maxGroups() == 2     # 120 particles
    land.inputParticlesApart.set(_scipion_set(tmp_path / "c.sqlite", 5, n_modes=2,
                                              pixel_size=3.0, first_id=101))
    errors = land._validate()
    assert any("different numbers of amplitudes" in e for e in errors)
    assert any("different pixel sizes (2 and 3 Å)" in e for e in errors)
