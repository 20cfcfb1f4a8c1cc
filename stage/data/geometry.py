"""Rigid transforms, box interpolation and pinhole projection with near-plane clipping.

Conventions are nuScenes': quaternions (w, x, y, z); ego frame x forward, y left, z up; camera frame
x right, y down, z forward; box size (w, l, h) with the length along the box's x axis.
"""

from __future__ import annotations

import numpy as np
from pyquaternion import Quaternion

# Corner order of nuscenes.utils.data_classes.Box.corners(): the first four face forward.
_CORNER_SIGNS = np.array([
    [1, 1, 1, 1, -1, -1, -1, -1],    # x (length)
    [1, -1, -1, 1, 1, -1, -1, 1],    # y (width)
    [1, 1, -1, -1, 1, 1, -1, -1],    # z (height)
], dtype=np.float64)

# The 12 edges of a box as corner index pairs; the first four are the front face.
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def pose_matrix(translation, rotation) -> np.ndarray:
    """4x4 matrix mapping points of a child frame into its parent (nuScenes pose records)."""
    m = np.eye(4)
    m[:3, :3] = Quaternion(rotation).rotation_matrix
    m[:3, 3] = translation
    return m


def invert(m: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = m[:3, :3].T
    inv[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return inv


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points of shape (..., 3)."""
    return pts @ m[:3, :3].T + m[:3, 3]


def yaw_of(q: Quaternion) -> float:
    """Heading about +z of a nuScenes rotation (the devkit's quaternion_yaw)."""
    v = q.rotation_matrix @ np.array([1.0, 0.0, 0.0])
    return float(np.arctan2(v[1], v[0]))


def box_corners(center, size_wlh, rotation: Quaternion) -> np.ndarray:
    """(8, 3) corners in the frame of `center`, same order as the devkit's Box.corners()."""
    w, l, h = size_wlh
    local = _CORNER_SIGNS * (np.array([l, w, h])[:, None] / 2.0)
    return (rotation.rotation_matrix @ local).T + np.asarray(center, dtype=np.float64)


def interpolate_box(a: dict, b: dict, alpha: float) -> dict:
    """Box between two keyframe annotations: centre and size linear, rotation by slerp."""
    qa, qb = Quaternion(a["rotation"]), Quaternion(b["rotation"])
    return {
        "translation": (1 - alpha) * np.asarray(a["translation"]) + alpha * np.asarray(b["translation"]),
        "size": (1 - alpha) * np.asarray(a["size"]) + alpha * np.asarray(b["size"]),
        "rotation": Quaternion.slerp(qa, qb, amount=alpha).normalised.elements,
    }


def project(K: np.ndarray, pts_cam: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points (..., 3) with z > 0 to pixels (..., 2)."""
    uvw = pts_cam @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


def clip_segments_to_near_plane(a: np.ndarray, b: np.ndarray, near: float):
    """Clip 3D segments a->b (N, 3) to z >= near. Returns clipped (a, b) and a keep mask."""
    za, zb = a[:, 2], b[:, 2]
    keep = (za >= near) | (zb >= near)
    a, b = a.copy(), b.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (near - za) / (zb - za)
    behind_a = keep & (za < near)
    behind_b = keep & (zb < near)
    a[behind_a] = a[behind_a] + t[behind_a, None] * (b[behind_a] - a[behind_a])
    b[behind_b] = a[behind_b] + t[behind_b, None] * (b[behind_b] - a[behind_b])
    return a, b, keep


def resize_crop_intrinsic(K: np.ndarray, src_wh, out_wh):
    """Scale to cover out_wh keeping aspect, then centre-crop: the new intrinsic and the resize plan.

    Returns (K_out, resized_wh, crop_xy). Per-axis scales come from the rounded resized size, so the
    intrinsic matches the pixels exactly.
    """
    (w0, h0), (w, h) = src_wh, out_wh
    s = max(w / w0, h / h0)
    rw, rh = max(w, round(w0 * s)), max(h, round(h0 * s))
    sx, sy = rw / w0, rh / h0
    ox, oy = (rw - w) // 2, (rh - h) // 2
    K_out = np.array([[K[0, 0] * sx, 0.0, K[0, 2] * sx - ox],
                      [0.0, K[1, 1] * sy, K[1, 2] * sy - oy],
                      [0.0, 0.0, 1.0]])
    return K_out, (rw, rh), (ox, oy)
