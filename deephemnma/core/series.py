"""Sliding windows of particles along a path in the landscape, for a series of
maps (one per window) that shows the motion along that path.

* :func:`parse_path`: a polyline of points in the PC1-PC2 plane from text
  ("x1,y1;x2,y2;..." or one point per line);
* :func:`path_positions`: each point's arc-length position on the polyline
  (of its nearest point on it) and its distance from it;
* :func:`axis_centres` / :func:`path_centres`: the frames' positions, evenly
  spaced along an axis or along the path;
* :func:`windows`: for each position, the particles nearest to it along the
  path (a fixed number of them).
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import InputError

__all__ = ["parse_path", "format_path", "path_positions", "path_length", "axis_centres",
           "path_centres", "windows"]


def parse_path(text: str, name: str = "--path") -> np.ndarray:
    """Points (m, 2) of a polyline written as "x1,y1;x2,y2;..." or one point
    per line ("x y" or "x,y"; blank lines and lines from '#' ignored).
    At least 2 points, finite, and a path of non-zero length."""
    lines = [ln.split("#", 1)[0].strip() for ln in re.split(r"[;\n]", str(text))]
    pts = []
    for ln in lines:
        if not ln:
            continue
        parts = [p for p in re.split(r"[,\s]+", ln) if p]
        try:
            xy = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"{name}: '{ln}' is not a point x,y (e.g. -20,5;30,10)") from None
        if len(xy) != 2:
            raise InputError(f"{name}: '{ln}' is not a point x,y (e.g. -20,5;30,10)")
        pts.append(xy)
    if len(pts) < 2:
        raise InputError(f"{name}: give at least 2 points x,y (e.g. -20,5;30,10), got {len(pts)}")
    p = np.asarray(pts, float)
    if not np.isfinite(p).all():
        raise InputError(f"{name}: the points must be finite numbers")
    if path_length(p) <= 0:
        raise InputError(f"{name}: the points are all the same: the path has no length")
    return p


def format_path(points: np.ndarray) -> str:
    """The text of a path file: one "x y" line per point (read back by
    :func:`parse_path`)."""
    return "".join(f"{x:.6g} {y:.6g}\n" for x, y in np.asarray(points, float))


def path_length(points: np.ndarray) -> float:
    """Total length of the polyline."""
    return float(np.linalg.norm(np.diff(np.asarray(points, float), axis=0), axis=1).sum())


def path_positions(coords: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(arc-length position, distance) of each coordinate (n, 2) on the
    polyline ``points`` (m, 2): the position of its nearest point on the
    path, from the first point; zero-length segments are skipped."""
    c = np.asarray(coords, float)[:, :2]
    p = np.asarray(points, float)
    seg = np.diff(p, axis=0)
    lengths = np.linalg.norm(seg, axis=1)
    keep = lengths > 0
    start = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])[keep]
    a, seg, lengths = p[:-1][keep], seg[keep], lengths[keep]
    best_d = np.full(len(c), np.inf)
    best_s = np.zeros(len(c))
    for a_i, v_i, l_i, s_i in zip(a, seg, lengths, start):
        t = np.clip((c - a_i) @ v_i / (l_i * l_i), 0.0, 1.0)
        d = np.linalg.norm(c - (a_i + t[:, None] * v_i), axis=1)
        closer = d < best_d
        best_d[closer], best_s[closer] = d[closer], s_i + t[closer] * l_i
    return best_s, best_d


def axis_centres(values: np.ndarray, n_frames: int, window: int) -> np.ndarray:
    """``n_frames`` positions evenly spaced along an axis, from the value of
    rank window/2 to that of rank n - 1 - window/2 (so that the end windows
    are centred on their positions)."""
    v = np.sort(np.asarray(values, float))
    half = min(window // 2, (len(v) - 1) // 2)
    return np.linspace(v[half], v[len(v) - 1 - half], n_frames)


def path_centres(points: np.ndarray, n_frames: int) -> np.ndarray:
    """``n_frames`` positions evenly spaced from the path's first point (0) to
    its last (its length)."""
    return np.linspace(0.0, path_length(points), n_frames)


def windows(positions: np.ndarray, centres: np.ndarray, window: int) -> list[np.ndarray]:
    """For each centre, the indices (sorted) of the ``window`` positions
    nearest to it (ties: the earlier index)."""
    s = np.asarray(positions, float)
    out = []
    for c in np.asarray(centres, float):
        idx = np.argsort(np.abs(s - c), kind="stable")[:window]
        out.append(np.sort(idx))
    return out
