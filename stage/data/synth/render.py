"""CAM_FRONT images: sky, a ground plane shaded per pixel from the road network, and lit boxes.

The ground is ray-cast: with the camera level (the ego drives on flat ground) every pixel row below the
horizon meets z = 0 at one depth, so a frame costs a few vectorised array operations. Boxes (buildings,
vehicles, pedestrians) are drawn face by face through a z-buffer, clipped at the near plane.
"""

from __future__ import annotations

import cv2
import numpy as np

from stage.data.synth.camera import CAM_TRANSLATION, Camera, pose_matrix, world_from_camera
from stage.data.synth.road_network import RoadNetwork
from stage.data.synth.scenery import Weather

NEAR = 0.3
FAR = 300.0
MATERIALS = {
    "asphalt": np.array([0.30, 0.30, 0.31]),
    "curb": np.array([0.74, 0.73, 0.70]),
    "sidewalk": np.array([0.60, 0.58, 0.55]),
    "lot": np.array([0.30, 0.40, 0.22]),
    "white": np.array([0.93, 0.93, 0.91]),
    "yellow": np.array([0.92, 0.74, 0.18]),
}
GLASS = np.array([0.12, 0.14, 0.17])
# Box faces as corner indices (corners: x = +-l/2, y = +-w/2, z = 0 or h; see _box_corners).
FACES = [(0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (2, 3, 7, 6), (1, 2, 6, 5), (3, 0, 4, 7)]
FACE_NORMALS = np.array([[0, 0, -1], [0, 0, 1], [0, -1, 0], [0, 1, 0], [1, 0, 0], [-1, 0, 0]], float)
FACE_INDEX = np.array(FACES)


def _box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 8, 3) world corners of boxes given as (N, 7) centre xyz, w, l, h, yaw."""
    sx = np.array([-1, 1, 1, -1, -1, 1, 1, -1]) * 0.5
    sy = np.array([-1, -1, 1, 1, -1, -1, 1, 1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    lx = boxes[:, None, 4] * sx
    ly = boxes[:, None, 3] * sy
    lz = boxes[:, None, 5] * sz
    c, s = np.cos(boxes[:, None, 6]), np.sin(boxes[:, None, 6])
    return np.stack([boxes[:, None, 0] + c * lx - s * ly, boxes[:, None, 1] + s * lx + c * ly,
                     boxes[:, None, 2] + lz], axis=-1)


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon (K, 3) against z >= NEAR."""
    out = []
    for a, b in zip(poly, np.roll(poly, -1, axis=0)):
        a_in, b_in = a[2] >= NEAR, b[2] >= NEAR
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)


class Renderer:
    def __init__(self, net: RoadNetwork, camera: Camera, texture_seed: int):
        self.net = net
        self.camera = camera
        K = camera.intrinsic
        self.fx, self.fy, self.cx, self.cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        W, H = camera.width, camera.height
        v = np.arange(H) + 0.5
        u = np.arange(W) + 0.5
        self.first_ground_row = int(np.searchsorted(v - self.cy, 1e-3))
        gv = v[self.first_ground_row:]
        self.depth = np.minimum(CAM_TRANSLATION[2] * self.fy / (gv - self.cy), 2000.0)[:, None].astype(np.float32)
        self.lateral = ((u - self.cx) / self.fx)[None, :].astype(np.float32) * self.depth       # (Hg, W)
        self.ray_x = ((u - self.cx) / self.fx).astype(np.float32)     # camera ray of each pixel column
        self.ray_y = ((v - self.cy) / self.fy).astype(np.float32)     # ... and row (z = 1)
        self.footprint = np.broadcast_to(self.depth / np.float32(self.fx), self.lateral.shape)
        self.texture_fade = np.clip(1.0 - self.footprint / 0.3, 0.0, 1.0)   # no grain where it would alias
        rng = np.random.default_rng(texture_seed)
        self.texture = rng.normal(0.0, 1.0, (256, 256)).astype(np.float32)
        self.texture = cv2.GaussianBlur(self.texture, (0, 0), 1.0) * 1.6
        # Sky rows: elevation of each pixel row above the horizon, 0 at the horizon, 1 at ~30 degrees.
        self.sky_t = np.clip((self.cy - v[:self.first_ground_row]) / (0.6 * self.fy), 0.0, 1.0)

    def background(self, ego_xy_yaw, weather: Weather) -> np.ndarray:
        """Sky and ground for an ego pose, float32 RGB in [0, 1]."""
        H, W = self.camera.height, self.camera.width
        x_e, y_e, yaw = ego_xy_yaw
        fwd = np.array([np.cos(yaw), np.sin(yaw)])
        right = np.array([np.sin(yaw), -np.cos(yaw)])
        cam_xy = np.array([x_e, y_e]) + CAM_TRANSLATION[0] * fwd
        gx = cam_xy[0] + self.depth * fwd[0] + self.lateral * right[0]
        gy = cam_xy[1] + self.depth * fwd[1] + self.lateral * right[1]
        layers = self.net.ground_layers(gx, gy, self.footprint)

        f32 = lambda v: np.asarray(v, np.float32)   # keep the per-pixel work in float32
        texel = self.texture[(gx * 3.0).astype(np.int32) & 255, (gy * 3.0).astype(np.int32) & 255]
        grain = (1.0 + 0.06 * texel * self.texture_fade)[..., None]
        road, curb, walk = (layers[k].astype(np.float32)[..., None] for k in ("road", "curb", "sidewalk"))
        lot = np.clip(1.0 - road - curb - walk, 0.0, 1.0)
        colour = (road * f32(MATERIALS["asphalt"]) + curb * f32(MATERIALS["curb"])
                  + walk * f32(MATERIALS["sidewalk"]) + lot * f32(MATERIALS["lot"])) * grain
        for paint in ("white", "yellow"):
            a = layers[paint].astype(np.float32)[..., None]
            colour += a * (f32(MATERIALS[paint]) - colour)
        light = (weather.ambient + weather.diffuse * max(weather.sun_direction[2], 0.0)) * f32(weather.tint)
        haze = 1.0 - np.exp(-self.depth / np.float32(weather.fog_distance))[..., None]
        colour = colour * (f32(light) * (1.0 - haze)) + haze * f32(weather.fog_colour)

        img = np.empty((H, W, 3), np.float32)
        t = self.sky_t[:, None]
        sky = (1.0 - t) * np.array(weather.sky_horizon) + t * np.array(weather.sky_top)
        img[:self.first_ground_row] = sky[:, None, :]
        img[self.first_ground_row:] = colour
        return img

    def draw_boxes(self, img: np.ndarray, ego_xy_yaw, boxes: np.ndarray, colours: np.ndarray,
                   weather: Weather) -> np.ndarray:
        """Draw (N, 7) boxes onto a uint8 RGB image (in place), hidden surfaces removed by a z-buffer.

        Painter's order fails for long buildings beside people on the sidewalk, so each face writes
        only pixels where its plane is nearer than what is already there.
        """
        if len(boxes) == 0:
            return img
        world_cam = world_from_camera(pose_matrix(*ego_xy_yaw))
        cam = np.linalg.inv(world_cam)
        cam_pos = world_cam[:3, 3]
        rel = cam_pos[None, :2] - boxes[:, :2]
        c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], -1)
        dist = np.linalg.norm(np.maximum(np.abs(local) - boxes[:, [4, 3]] / 2, 0.0), axis=-1)
        corners = _box_corners(boxes)
        cam_corners = corners @ cam[:3, :3].T + cam[:3, 3]
        keep = (dist < FAR) & (cam_corners[..., 2].max(axis=1) > NEAR)
        # Horizontal frustum test on corners pushed in front of the near plane.
        z = np.maximum(cam_corners[..., 2], NEAR)
        u = cam_corners[..., 0] / z * self.fx + self.cx
        keep &= (u.max(axis=1) > 0) & (u.min(axis=1) < self.camera.width)
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            return img
        H, W = img.shape[:2]
        sun = weather.sun_direction
        # Per (box, face): world normal, facing test, Lambert shade and haze, all vectorised.
        c, s = c[idx], s[idx]
        nx = FACE_NORMALS[None, :, 0] * c[:, None] - FACE_NORMALS[None, :, 1] * s[:, None]
        ny = FACE_NORMALS[None, :, 0] * s[:, None] + FACE_NORMALS[None, :, 1] * c[:, None]
        normals = np.stack([nx, ny, np.broadcast_to(FACE_NORMALS[None, :, 2], nx.shape)], -1)   # (n, 6, 3)
        face_centres = corners[idx][:, FACE_INDEX].mean(axis=2)                                   # (n, 6, 3)
        facing = np.einsum("nfk,nfk->nf", normals, cam_pos - face_centres) > 0
        shade = weather.ambient + weather.diffuse * np.maximum(normals @ sun, 0.0)
        shade[:, 1] *= 1.05
        haze = 1.0 - np.exp(-np.linalg.norm(face_centres - cam_pos, axis=-1) / weather.fog_distance)
        rgb = (colours[idx][:, None, :] * shade[..., None] * np.array(weather.tint) * (1 - haze[..., None])
               + haze[..., None] * np.array(weather.fog_colour))
        rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
        face_cam = cam_corners[idx][:, FACE_INDEX]                                                 # (n, 6, 4, 3)
        normals_cam = normals @ cam[:3, :3].T
        plane_d = np.einsum("nfk,nfk->nf", normals_cam, face_cam[:, :, 0])
        zbuf = np.full((H, W), np.inf, np.float32)
        needs_clip = face_cam[..., 2].min(axis=-1) < NEAR
        zc = np.maximum(face_cam[..., 2], NEAR)
        all_u = face_cam[..., 0] / zc * self.fx + self.cx             # (n, 6, 4), exact unless clipped
        all_v = face_cam[..., 1] / zc * self.fy + self.cy
        # Integer bounding boxes and OpenCV polygons (1/16 px) of all unclipped faces at once.
        bx0 = np.clip(all_u.min(-1), 0, W).astype(np.int32)
        bx1 = np.clip(all_u.max(-1) + 1, 0, W).astype(np.int32)
        by0 = np.clip(all_v.min(-1), 0, H).astype(np.int32)
        by1 = np.clip(all_v.max(-1) + 1, 0, H).astype(np.int32)
        polys = np.stack([all_u.clip(-4 * W, 5 * W) - 0.5 - bx0[..., None],
                          all_v.clip(-4 * H, 5 * H) - 0.5 - by0[..., None]], -1)
        polys = (polys * 16 + 0.5).astype(np.int32)
        drawn = facing & (needs_clip | ((bx1 > bx0) & (by1 > by0)))
        errstate = np.seterr(divide="ignore", invalid="ignore")
        for j, f in zip(*np.nonzero(drawn)):
            if needs_clip[j, f]:
                poly = _clip_near(face_cam[j, f])
                if len(poly) < 3:
                    continue
                pu = poly[:, 0] / poly[:, 2] * self.fx + self.cx
                pv = poly[:, 1] / poly[:, 2] * self.fy + self.cy
                # Continuous image coordinates: pixel i spans [i, i + 1]; OpenCV puts pixel i's centre at i.
                x0, x1 = max(int(pu.min()), 0), min(int(pu.max()) + 1, W)
                y0, y1 = max(int(pv.min()), 0), min(int(pv.max()) + 1, H)
                if x0 >= x1 or y0 >= y1:
                    continue
                pts = np.stack([pu.clip(-4 * W, 5 * W) - (0.5 + x0), pv.clip(-4 * H, 5 * H) - (0.5 + y0)], -1)
                pts = (pts * 16 + 0.5).astype(np.int32)
            else:
                x0, x1, y0, y1, pts = bx0[j, f], bx1[j, f], by0[j, f], by1[j, f], polys[j, f]
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillConvexPoly(mask, np.ascontiguousarray(pts), 1, cv2.LINE_8, 4)
            n = normals_cam[j, f]
            denom = n[0] * self.ray_x[None, x0:x1] + n[1] * self.ray_y[y0:y1, None] + n[2]
            depth = plane_d[j, f] / denom
            depth[denom > -1e-9] = np.inf      # a facing plane has n . ray < 0 at every pixel it covers
            region = zbuf[y0:y1, x0:x1]
            write = mask.view(bool) & (depth < region)
            region[write] = depth[write]
            img[y0:y1, x0:x1][write] = rgb[j, f]
        np.seterr(**errstate)
        return img

    def render(self, ego_xy_yaw, boxes: np.ndarray, colours: np.ndarray, weather: Weather) -> np.ndarray:
        """uint8 RGB (H, W, 3) frame."""
        img = self.background(ego_xy_yaw, weather)
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return self.draw_boxes(img, ego_xy_yaw, boxes, colours, weather)


def agent_draw_boxes(centres: np.ndarray, sizes: np.ndarray, yaws: np.ndarray, colours: np.ndarray,
                     kinds: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Split each car's box into a body and a glass cabin; others stay one box. Returns boxes, colours."""
    boxes, cols = [], []
    for c, (w, l, h), yaw, col, kind in zip(centres, sizes, yaws, colours, kinds):
        if kind != "car":
            boxes.append([c[0], c[1], c[2], w, l, h, yaw])
            cols.append(col)
            continue
        z0, body_h = c[2] - h / 2, 0.55 * h
        boxes.append([c[0], c[1], z0 + body_h / 2, w, l, body_h, yaw])
        cols.append(col)
        back = -0.05 * l     # the cabin sits slightly behind the middle, over the rear seats
        boxes.append([c[0] + back * np.cos(yaw), c[1] + back * np.sin(yaw), z0 + (body_h + h) / 2,
                      0.92 * w, 0.55 * l, h - body_h, yaw])
        cols.append(GLASS)
    return np.array(boxes).reshape(-1, 7), np.array(cols).reshape(-1, 3)
