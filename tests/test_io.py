"""Metadata (.xmd, .star) and stacks (.mrcs, .stk) against the shared files and xmippLib."""
import numpy as np
import pytest

from deephemnma.errors import InputError
from deephemnma.io.metadata import (Table, concatenate_xmd, count_rows, image_ref, iter_metadata,
                                    parse_image_ref, read_metadata,
                                    write_star, write_xmd)
from deephemnma.io.stacks import (StackWriter, load_images, open_stack, read_volume,
                                  write_stack, write_volume)

from conftest import shared_file, xmipplib


def test_read_continuousflex_xmd_values():
    t = read_metadata(shared_file("continuousflex", "images_PM_atoms_smallstack.xmd"))
    assert len(t) == 10
    assert t["angleRot"][0] == pytest.approx(-155.019955)
    assert t["shiftY"][0] == pytest.approx(-1.857502)
    assert t["nmaDisplacements"].shape == (10, 2)
    assert np.allclose(t["nmaDisplacements"][0], [-27.1903, -28.4025])
    assert t["cost"][3] == pytest.approx(0.076827)
    assert t["itemId"].dtype.kind == "i" and t["itemId"][2] == 2
    ws = read_metadata(shared_file("continuousflex", "images_WS_atoms.xmd"))
    assert len(ws) == 200 and ws["nmaDisplacements"].shape == (200, 3)
    assert ws["cost"][0] == pytest.approx(8.055914e-04)


def test_xmd_round_trip_read_by_xmipp(tmp_path):
    xm = xmipplib()
    t = read_metadata(shared_file("continuousflex", "images_WS_atoms.xmd"))
    out = tmp_path / "out.xmd"
    write_xmd(out, t)
    back = read_metadata(out)
    # image references are rebased onto the written file's folder: they resolve
    # to the same files
    t, back = t.rebased(None, absolute=True), back.rebased(None, absolute=True)
    for c in t.columns:
        if t[c].dtype.kind == "f":
            assert np.allclose(back[c], t[c], rtol=1e-7, atol=1e-9)
        else:
            assert (back[c] == t[c]).all()
    md = xm.MetaData(str(out))
    ids = list(md)
    assert len(ids) == 200
    assert md.getValue(xm.MDL_ANGLE_TILT, ids[5]) == pytest.approx(t["angleTilt"][5], abs=1e-4)
    assert np.allclose(md.getValue(xm.MDL_NMA, ids[7]), t["nmaDisplacements"][7], atol=1e-5)


def test_relion31_star_optics_merged():
    t = read_metadata(shared_file("particles", "relion31.star"))
    assert len(t) == 5
    assert np.all(t["samplingRate"] == pytest.approx(2.806))
    assert np.all(t["ctfVoltage"] == 300) and np.all(t["ctfQ0"] == pytest.approx(0.1))
    # origins in Angstrom became pixels
    text = open(shared_file("particles", "relion31.star")).read()
    assert "rlnOriginXAngst" in text and "rlnOriginXAngst" not in t
    assert np.abs(t["shiftX"]).max() < 10
    idx, path = parse_image_ref(t["image"][0])
    assert idx >= 1 and path.endswith(".mrcs")


def test_relion30_star_pixel_size():
    t = read_metadata(shared_file("particles", "empiar_10076_7.star"))
    assert len(t) == 7
    assert t["ctfDefocusU"][0] == pytest.approx(15301.1)
    assert t["samplingRate"][0] == pytest.approx(5 * 1e4 / 38168)
    imgs = load_images(t, root=str(shared_file("particles")))
    assert imgs.shape == (7, 320, 320) and np.isfinite(imgs).all()


def test_star_write_read_round_trip(tmp_path):
    t = Table({"image": [image_ref(i, "s.mrcs") for i in range(1, 4)],
               "angleRot": [1.0, 2.0, 3.5], "angleTilt": [10., 20., 30.],
               "anglePsi": [0., 5., -5.], "shiftX": [0.5, -1.0, 2.0],
               "shiftY": [0., 1.5, -2.5], "ctfDefocusU": [5000., 6000., 7000.],
               "ctfVoltage": [200.] * 3, "ctfQ0": [0.1] * 3})
    write_star(tmp_path / "p.star", t, pixel_size=1.5, image_size=64)
    back = read_metadata(tmp_path / "p.star")
    assert np.allclose(back["shiftX"], t["shiftX"]) and np.allclose(back["shiftY"], t["shiftY"])
    assert np.allclose(back["angleRot"], t["angleRot"])
    assert np.allclose(back["samplingRate"], 1.5) and np.allclose(back["ctfVoltage"], 200)


@pytest.mark.parametrize("name", ["relion31.star", "empiar_10076_7.star"])
def test_streamed_chunks_equal_whole_table(name):
    """iter_metadata (RELION: optics merged into every chunk, itemIds continued)
    yields the rows read_metadata reads, in order."""
    path = shared_file("particles", name)
    whole = read_metadata(path)
    chunks = list(iter_metadata(path, chunk=2))
    assert [len(c) for c in chunks] == [2] * (len(whole) // 2) + [len(whole) % 2] * (len(whole) % 2)
    joined = Table.concatenate(chunks)
    assert joined.columns == whole.columns and count_rows(path) == len(whole)
    for c in whole.columns:
        assert np.array_equal(joined[c], whole[c]), c


def test_streamed_xmd_chunks_and_join(tmp_path):
    t = Table({"itemId": np.arange(1, 12), "image": [image_ref(i, "s.mrcs") for i in range(1, 12)],
               "anglePsi": np.linspace(-3, 3, 11), "nmaDisplacements": np.arange(33.).reshape(11, 3)})
    header = tmp_path / "two_blocks.xmd"            # a small first block is passed over
    write_xmd(tmp_path / "info.xmd", Table({"note": ["x"]}), block="info")
    write_xmd(tmp_path / "rows.xmd", t, block="particles")
    header.write_text((tmp_path / "info.xmd").read_text() + (tmp_path / "rows.xmd").read_text())
    chunks = list(iter_metadata(header, chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    for k, c in enumerate(chunks):
        write_xmd(tmp_path / f"part{k}.xmd", c)
    concatenate_xmd([tmp_path / f"part{k}.xmd" for k in range(3)], tmp_path / "all.xmd")
    back = read_metadata(tmp_path / "all.xmd")
    assert np.array_equal(back["nmaDisplacements"], t["nmaDisplacements"])
    assert np.allclose(back["anglePsi"], t["anglePsi"]) and list(back["image"]) == list(t["image"])
    write_xmd(tmp_path / "other.xmd", Table({"itemId": [1], "cost": [0.5]}))
    with pytest.raises(InputError, match="differ"):
        concatenate_xmd([tmp_path / "part0.xmd", tmp_path / "other.xmd"], tmp_path / "bad.xmd")
    assert not (tmp_path / "bad.xmd").exists()
    with pytest.raises(InputError, match="no particle block"):
        list(iter_metadata(tmp_path / "info.xmd"))


def test_bad_metadata(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "missing.xmd")
    bad = tmp_path / "bad.xmd"
    bad.write_text("hello world\n")
    with pytest.raises(InputError, match="not a STAR"):
        read_metadata(bad)
    ragged = tmp_path / "ragged.xmd"
    ragged.write_text("data_x\nloop_\n _a\n _b\n1 2\n3\n")
    with pytest.raises(InputError, match="row has 1 values"):
        read_metadata(ragged)


def test_spider_stack_matches_xmipp():
    xm = xmipplib()
    p = shared_file("continuousflex", "smallstack_img.stk")
    s = open_stack(p)
    assert s.shape == (10, 128, 128)
    for i in (0, 4, 9):
        assert np.array_equal(s[i], xm.Image(f"{i + 1}@{p}").getData())
    sel = s[np.array([7, 2])]
    assert np.array_equal(sel[0], s[7]) and np.array_equal(sel[1], s[2])


def test_stack_writers_round_trip(tmp_path):
    xm = xmipplib()
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(6, 32, 32)).astype(np.float32)
    for name in ("a.mrcs", "a.stk"):
        write_stack(tmp_path / name, imgs, pixel_size=1.7)
        s = open_stack(tmp_path / name)
        assert np.array_equal(s[:], imgs) and s.pixel_size == pytest.approx(1.7)
        assert np.array_equal(xm.Image(f"3@{tmp_path / name}").getData(), imgs[2])
    w = StackWriter(tmp_path / "big.mrcs", 6, 32, pixel_size=2.0)
    w.write(0, imgs[:3])
    w.close(complete=False)           # interrupted
    assert not (tmp_path / "big.mrcs").exists()
    w = StackWriter(tmp_path / "big.mrcs", 6, 32)   # resume keeps what was written
    w.write(3, imgs[3:])
    w.close()
    assert np.array_equal(open_stack(tmp_path / "big.mrcs")[:], imgs)
    with pytest.raises(InputError, match="expected 64x64"):
        open_stack(tmp_path / "a.mrcs").check_box(64)


def test_volume_round_trip(tmp_path):
    vol = np.random.default_rng(1).normal(size=(16, 16, 16)).astype(np.float32)
    write_volume(tmp_path / "v.mrc", vol, 1.25)
    back, vs = read_volume(tmp_path / "v.mrc")
    assert np.array_equal(back, vol) and vs == pytest.approx(1.25)
    with pytest.raises(InputError):
        read_volume(shared_file("particles", "relion31.star"))


def test_vector_of_other_length_reads_as_nan(tmp_path):
    """A row whose vector has another length than most rows' reads as NaN (so
    the stages reject that row alone); the other rows keep their values."""
    p = tmp_path / "ragged_vec.xmd"
    p.write_text("data_particles\nloop_\n _image\n _nmaDisplacements\n"
                 "1@a.stk '1 2 3'\n2@a.stk '4 5'\n3@a.stk '7 8 9'\n4@a.stk '1 2 3 4'\n")
    t = read_metadata(p)
    d = t["nmaDisplacements"]
    assert d.shape == (4, 3)
    np.testing.assert_array_equal(d[[0, 2]], [[1, 2, 3], [7, 8, 9]])
    assert np.isnan(d[1]).all() and np.isnan(d[3]).all()
