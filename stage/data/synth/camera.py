"""The ego's CAM_FRONT: nuScenes-like mounting and intrinsics scaled to the rendered width.

Frames: ego (x forward, y left, z up); camera (x right, y down, z forward), as in nuScenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

NUSCENES_WIDTH = 1600
NUSCENES_FX, NUSCENES_CX, NUSCENES_CY = 1266.4, 816.3, 491.5
CAM_TRANSLATION = (1.70, 0.0, 1.51)          # metres in the ego frame
# Columns: where the camera's x (right), y (down), z (forward) axes point in the ego frame.
EGO_FROM_CAM_ROTATION = np.array([[0.0, 0.0, 1.0],
                                  [-1.0, 0.0, 0.0],
                                  [0.0, -1.0, 0.0]])
LIDAR_TRANSLATION = (0.94, 0.0, 1.84)


@dataclass(frozen=True)
class Camera:
    width: int
    height: int

    @property
    def intrinsic(self) -> np.ndarray:
        s = self.width / NUSCENES_WIDTH
        return np.array([[NUSCENES_FX * s, 0.0, NUSCENES_CX * s],
                         [0.0, NUSCENES_FX * s, NUSCENES_CY * s],
                         [0.0, 0.0, 1.0]])

    @property
    def rotation_quaternion(self) -> list[float]:
        """w, x, y, z of the ego-from-camera rotation (nuScenes calibrated_sensor.rotation)."""
        return [float(v) for v in Quaternion(matrix=EGO_FROM_CAM_ROTATION).elements]

    def calibration(self) -> dict:
        return {"translation": list(CAM_TRANSLATION), "rotation": self.rotation_quaternion,
                "camera_intrinsic": self.intrinsic.tolist()}


def yaw_quaternion(yaw: float) -> list[float]:
    return [float(v) for v in Quaternion(axis=[0.0, 0.0, 1.0], angle=float(yaw)).elements]


def pose_matrix(x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    """4x4 global-from-ego transform of a planar pose."""
    c, s = np.cos(yaw), np.sin(yaw)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = [x, y, z]
    return m


def world_from_camera(ego_pose: np.ndarray) -> np.ndarray:
    """4x4 global-from-camera transform for a 4x4 global-from-ego pose."""
    cam = np.eye(4)
    cam[:3, :3] = EGO_FROM_CAM_ROTATION
    cam[:3, 3] = CAM_TRANSLATION
    return ego_pose @ cam
