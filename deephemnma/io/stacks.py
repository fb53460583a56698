"""Image stacks and volumes: MRC (``.mrc``, ``.mrcs``, memory-mapped) and
SPIDER (``.stk``, ``.spi``).

``open_stack(path)`` returns a lazily indexed :class:`Stack` (float32 images,
shape (n, y, x)); nothing is read until indexed, so stacks of millions of
images are streamed with constant memory. Writers are atomic or, for very
large outputs, :class:`StackWriter` fills a preallocated ``.mrcs`` chunk by
chunk and can be reopened to resume.
"""
import os
import warnings

import mrcfile
import numpy as np

from ..errors import InputError
from ..utils import atomic_path
from .metadata import parse_image_ref

__all__ = ["Stack", "open_stack", "write_stack", "StackWriter", "read_volume",
           "write_volume", "load_images", "read_spider", "write_spider"]

_SPIDER_EXT = (".stk", ".spi", ".xmp", ".vol")


# --------------------------------------------------------------------------
# SPIDER
def _spider_header(path):
    with open(path, "rb") as f:
        raw = f.read(1024)
    if len(raw) < 1024:
        raise InputError(f"{path}: too short for a SPIDER file")
    for endian in ("<", ">"):
        h = np.frombuffer(raw[:1024], dtype=endian + "f4")
        nz, nrow, iform, nsam, labbyt = h[0], h[1], h[4], h[11], h[21]
        if (iform in (1, 3, -11, -12, -21, -22) and nrow >= 1 and nsam >= 1
                and labbyt > 0 and labbyt % 4 == 0 and nz >= 1):
            return endian, h
    raise InputError(f"{path}: not a SPIDER image/stack (unrecognised header)")


def read_spider(path, mmap=True):
    """SPIDER image, volume or stack -> array (n, y, x) (or (z, y, x))."""
    endian, h = _spider_header(path)
    nz, nrow, nsam = int(h[0]), int(h[1]), int(h[11])
    labbyt = int(h[21])
    istack, maxim = int(h[23]), int(h[25])
    dtype = np.dtype(endian + "f4")
    if istack > 0:  # stack: overall header, then (header + image) per image
        n = max(maxim, 1)
        per = labbyt // 4 + nrow * nsam * nz
        data = (np.memmap(path, dtype=dtype, mode="r", offset=labbyt, shape=(n, per))
                if mmap else np.fromfile(path, dtype=dtype, offset=labbyt).reshape(n, per))
        return data[:, labbyt // 4:].reshape(n, nz * nrow, nsam) if nz == 1 else \
            data[:, labbyt // 4:].reshape(n, nz, nrow, nsam)
    data = np.memmap(path, dtype=dtype, mode="r", offset=labbyt, shape=(nz, nrow, nsam))
    return data


def _spider_header_bytes(nz, nrow, nsam, stack_n=None, imgnum=0, pixel_size=None):
    labrec = int(np.ceil(256.0 / nsam))
    labbyt = labrec * nsam * 4
    h = np.zeros(labbyt // 4, dtype="<f4")
    h[0], h[1] = nz, nrow
    h[2] = nrow * nz + labrec
    h[4] = 1 if nz == 1 else 3
    h[11], h[12] = nsam, labrec
    h[21], h[22] = labbyt, nsam * 4
    if stack_n is not None:
        h[23] = 2
        h[25] = stack_n
    if imgnum:
        h[26] = imgnum
        h[23] = 0
    if pixel_size:
        h[37] = pixel_size
    return h.tobytes()


def write_spider(path, images, pixel_size=None):
    """Write (n, y, x) float images as a SPIDER stack (atomic)."""
    images = np.asarray(images, dtype="<f4")
    n, ny, nx = images.shape
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(_spider_header_bytes(1, ny, nx, stack_n=n, pixel_size=pixel_size))
        for i in range(n):
            f.write(_spider_header_bytes(1, ny, nx, imgnum=i + 1, pixel_size=pixel_size))
            f.write(images[i].tobytes())


# --------------------------------------------------------------------------
class Stack:
    """A lazily indexed image stack. ``stack[i]``, ``stack[a:b]``,
    ``stack[index_array]`` return float32 arrays; ``len(stack)``;
    ``stack.shape`` = (n, y, x); ``stack.pixel_size`` in Å (None if unknown)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"image stack not found: {self.path}")
        self.pixel_size = None
        ext = os.path.splitext(self.path)[1].lower()
        if ext in _SPIDER_EXT:
            self._data = read_spider(self.path)
            _, h = _spider_header(self.path)
            self.pixel_size = float(h[37]) if h[37] > 0 else None
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    m = mrcfile.mmap(self.path, mode="r", permissive=True)
            except Exception as e:  # mrcfile raises ValueError and others
                raise InputError(f"{self.path}: cannot read as MRC ({e})") from None
            if m.data is None:
                raise InputError(f"{self.path}: MRC file has no data")
            data = m.data
            if data.ndim == 2:
                data = data[None]
            self._mrc = m
            self._data = data
            vs = float(m.voxel_size.x)
            self.pixel_size = vs if vs > 0 else None
        if self._data.ndim != 3:
            raise InputError(f"{self.path}: expected a stack of 2D images, got shape {self._data.shape}")

    @property
    def shape(self):
        return tuple(self._data.shape)

    @property
    def box(self):
        return self._data.shape[-1]

    def __len__(self):
        return self._data.shape[0]

    def __getitem__(self, idx):
        if isinstance(idx, np.ndarray) and idx.dtype != bool:
            order = np.argsort(idx)
            out = np.empty((len(idx),) + self.shape[1:], np.float32)
            out[order] = self._data[idx[order]]
            return out
        return np.array(self._data[idx], dtype=np.float32)

    def check_box(self, box, what="images"):
        if self.shape[1] != self.shape[2] or self.shape[1] != box:
            raise InputError(f"{self.path}: {what} are {self.shape[2]}x{self.shape[1]} px, "
                             f"expected {box}x{box}")


def open_stack(path):
    return Stack(path)


def write_stack(path, images, pixel_size=None):
    """Write (n, y, x) images to ``.mrcs``/``.mrc`` or SPIDER ``.stk`` (atomic)."""
    path = os.fspath(path)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    if os.path.splitext(path)[1].lower() in _SPIDER_EXT:
        return write_spider(path, images, pixel_size)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(images)
            m.header.ispg = 0  # image stack
            if pixel_size:
                m.voxel_size = float(pixel_size)


class StackWriter:
    """Fill a preallocated ``.mrcs`` of ``n`` images of ``box`` px in chunks.

    The file is created as ``path + '.part'`` and renamed by :meth:`close`
    once complete; reopening an existing ``.part`` keeps what was written, so
    an interrupted job resumes."""

    def __init__(self, path, n, box, pixel_size=None):
        self.path = os.fspath(path)
        self.part = self.path + ".part"
        self.n, self.box = int(n), int(box)
        if os.path.exists(self.part):
            self._m = mrcfile.mmap(self.part, mode="r+")
            if self._m.data.shape != (self.n, self.box, self.box):
                self._m.close()
                raise InputError(f"{self.part}: existing partial stack has shape "
                                 f"{self._m.data.shape}, expected {(self.n, self.box, self.box)}")
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._m = mrcfile.new_mmap(self.part, shape=(self.n, self.box, self.box),
                                       mrc_mode=2, overwrite=True)
            self._m.header.ispg = 0
            if pixel_size:
                self._m.voxel_size = float(pixel_size)

    def write(self, start, images):
        images = np.asarray(images, dtype=np.float32)
        self._m.data[start:start + len(images)] = images

    def flush(self):
        self._m.flush()

    def close(self, complete=True):
        self._m.flush()
        self._m.close()
        if complete:
            os.replace(self.part, self.path)


# --------------------------------------------------------------------------
def read_volume(path):
    """MRC or SPIDER volume -> (array [z, y, x] float32, voxel_size Å or None)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"volume not found: {path}")
    if os.path.splitext(path)[1].lower() in _SPIDER_EXT:
        _, h = _spider_header(path)
        return np.array(read_spider(path, mmap=False), np.float32), (float(h[37]) or None)
    try:
        with mrcfile.open(path, permissive=True) as m:
            vol = np.array(m.data, dtype=np.float32)
            vs = float(m.voxel_size.x)
    except Exception as e:
        raise InputError(f"{path}: cannot read as MRC ({e})") from None
    if vol.ndim != 3:
        raise InputError(f"{path}: expected a 3D volume, got shape {vol.shape}")
    return vol, (vs if vs > 0 else None)


def write_volume(path, vol, voxel_size):
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(np.asarray(vol, dtype=np.float32))
            m.voxel_size = float(voxel_size)


def load_images(table, root=None, indices=None):
    """Images referenced by a Table's ``image`` column (``N@path``), resolved
    relative to ``root`` (usually the metadata file's folder). Returns float32
    (n, y, x) in table order (or for ``indices`` only)."""
    table.require(["image"], "image")
    if root is None:
        root = getattr(table, "root", None)
    refs = table["image"] if indices is None else table["image"][np.asarray(indices)]
    parsed = [parse_image_ref(r) for r in refs]
    stacks = {}
    out = None
    for k, (i, p) in enumerate(parsed):
        full = p if (os.path.isabs(p) or root is None) else os.path.join(root, p)
        if full not in stacks:
            stacks[full] = open_stack(full)
        st = stacks[full]
        if not 1 <= i <= len(st):
            raise InputError(f"{full}: image {i} requested, stack has {len(st)}")
        if out is None:
            out = np.empty((len(parsed),) + st.shape[1:], np.float32)
        elif st.shape[1:] != out.shape[1:]:
            raise InputError(f"{full}: images are {st.shape[1:]}, others {out.shape[1:]}")
        out[k] = st[i - 1]
    return out if out is not None else np.zeros((0, 0, 0), np.float32)
