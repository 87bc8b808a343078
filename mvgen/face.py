"""Faces and mouths offline: MTCNN (Zhang et al., 2016) with the P-, R- and O-Net weights that ship inside the
``facenet-pytorch`` wheel (MIT).

Only the wheel's three weight files are used: its package pins torch < 2.3 and imports torchvision, so set-up
installs it without dependencies and this module never imports it. The files are plain state dicts, read with
``torch.load(weights_only=True)``. The cascade is the standard one (image pyramid -> P-Net proposals -> R-Net
refinement -> O-Net boxes and five landmarks: eyes, nose, mouth corners), written here in plain torch.

``FaceMouthTracker`` follows one face through a clip: a full detection on the first frame (and again whenever
the face is lost), then one O-Net pass per frame on the previous box. Mouth openness is the share of dark
pixels under the line between the mouth corners, relative to the face's own brightness.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mvgen.errors import MvgenError

THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-Net face probabilities (facenet-pytorch's defaults)
PYRAMID_FACTOR = 0.709


def mtcnn_weights() -> dict[str, Path]:
    """The P-, R- and O-Net state dicts inside the installed ``facenet_pytorch`` package."""
    from mvgen.models import wheel_weights

    names = ("pnet", "rnet", "onet")
    paths = wheel_weights("facenet_pytorch", "facenet-pytorch", "MTCNN weights", "data", [f"{n}.pt" for n in names],
                          "the face tracker")
    return dict(zip(names, paths))


def face_model_available() -> str | None:
    """None when the face tracker can load, else why not (one line)."""
    try:
        mtcnn_weights()
    except MvgenError as exc:
        return str(exc)
    return None


def _networks() -> dict[str, Any]:
    import torch
    from torch import nn

    def trunk(*layers: tuple[str, nn.Module]) -> nn.Module:
        module = nn.Module()
        for name, layer in layers:
            module.add_module(name, layer)
        return module

    pnet = trunk(("conv1", nn.Conv2d(3, 10, 3)), ("prelu1", nn.PReLU(10)), ("conv2", nn.Conv2d(10, 16, 3)),
                 ("prelu2", nn.PReLU(16)), ("conv3", nn.Conv2d(16, 32, 3)), ("prelu3", nn.PReLU(32)),
                 ("conv4_1", nn.Conv2d(32, 2, 1)), ("conv4_2", nn.Conv2d(32, 4, 1)))
    rnet = trunk(("conv1", nn.Conv2d(3, 28, 3)), ("prelu1", nn.PReLU(28)), ("conv2", nn.Conv2d(28, 48, 3)),
                 ("prelu2", nn.PReLU(48)), ("conv3", nn.Conv2d(48, 64, 2)), ("prelu3", nn.PReLU(64)),
                 ("dense4", nn.Linear(576, 128)), ("prelu4", nn.PReLU(128)), ("dense5_1", nn.Linear(128, 2)),
                 ("dense5_2", nn.Linear(128, 4)))
    onet = trunk(("conv1", nn.Conv2d(3, 32, 3)), ("prelu1", nn.PReLU(32)), ("conv2", nn.Conv2d(32, 64, 3)),
                 ("prelu2", nn.PReLU(64)), ("conv3", nn.Conv2d(64, 64, 3)), ("prelu3", nn.PReLU(64)),
                 ("conv4", nn.Conv2d(64, 128, 2)), ("prelu4", nn.PReLU(128)), ("dense5", nn.Linear(1152, 256)),
                 ("prelu5", nn.PReLU(256)), ("dense6_1", nn.Linear(256, 2)), ("dense6_2", nn.Linear(256, 4)),
                 ("dense6_3", nn.Linear(256, 10)))
    nets = {"pnet": pnet, "rnet": rnet, "onet": onet}
    for name, path in mtcnn_weights().items():
        nets[name].load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        nets[name].eval()
    return nets


def _run_pnet(net: Any, x: Any) -> tuple[Any, Any]:
    from torch.nn.functional import max_pool2d, softmax

    x = net.prelu1(net.conv1(x))
    x = max_pool2d(x, 2, 2, ceil_mode=True)
    x = net.prelu3(net.conv3(net.prelu2(net.conv2(x))))
    return net.conv4_2(x), softmax(net.conv4_1(x), dim=1)


def _run_rnet(net: Any, x: Any) -> tuple[Any, Any]:
    from torch.nn.functional import max_pool2d, softmax

    x = max_pool2d(net.prelu1(net.conv1(x)), 3, 2, ceil_mode=True)
    x = max_pool2d(net.prelu2(net.conv2(x)), 3, 2, ceil_mode=True)
    x = net.prelu3(net.conv3(x)).permute(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = net.prelu4(net.dense4(x))
    return net.dense5_2(x), softmax(net.dense5_1(x), dim=1)


def _run_onet(net: Any, x: Any) -> tuple[Any, Any, Any]:
    from torch.nn.functional import max_pool2d, softmax

    x = max_pool2d(net.prelu1(net.conv1(x)), 3, 2, ceil_mode=True)
    x = max_pool2d(net.prelu2(net.conv2(x)), 3, 2, ceil_mode=True)
    x = max_pool2d(net.prelu3(net.conv3(x)), 2, 2, ceil_mode=True)
    x = net.prelu4(net.conv4(x)).permute(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = net.prelu5(net.dense5(x))
    return net.dense6_2(x), net.dense6_3(x), softmax(net.dense6_1(x), dim=1)


def _nms(boxes: np.ndarray, scores: np.ndarray, overlap: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (IoU, or intersection over the smaller box)."""
    order = np.argsort(scores)[::-1]
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        inter = w * h
        ratio = inter / (np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter)
        order = rest[ratio <= overlap]
    return np.array(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2], out[:, 3] = out[:, 0] + side, out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + offsets * np.stack([w, h, w, h], axis=1)
    return out


def _crops(image: Any, boxes: np.ndarray, size: int) -> Any:
    """Each box cut from ``image`` (1x3xHxW float tensor, zero outside) and resized to size x size."""
    import torch
    from torch.nn.functional import interpolate

    _, _, height, width = image.shape
    out = []
    for x0, y0, x1, y1 in boxes[:, :4].astype(int):
        crop = torch.zeros((1, 3, max(1, y1 - y0 + 1), max(1, x1 - x0 + 1)), dtype=image.dtype)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
        if sx1 > sx0 and sy1 > sy0:
            crop[:, :, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[:, :, sy0:sy1, sx0:sx1]
        out.append(interpolate(crop, size=(size, size), mode="area"))
    return (torch.cat(out) - 127.5) * 0.0078125


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float
    landmarks: np.ndarray  # 5 x 2: left eye, right eye, nose, left mouth corner, right mouth corner


@dataclass
class MtcnnDetector:
    min_face: int = 40  # pixels

    @functools.cached_property
    def nets(self) -> dict[str, Any]:
        return _networks()

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 frame (H x W x 3), most probable first."""
        import torch
        from torch.nn.functional import interpolate

        image = torch.from_numpy(np.array(frame, np.float32)).permute(2, 0, 1)[None]
        height, width = frame.shape[:2]
        proposals = []
        scale, side = 12.0 / self.min_face, min(height, width) * 12.0 / self.min_face
        with torch.inference_mode():
            while side >= 12:
                scaled = interpolate(image, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
                offsets, probs = _run_pnet(self.nets["pnet"], (scaled - 127.5) * 0.0078125)
                ys, xs = np.nonzero(probs[0, 1].numpy() >= THRESHOLDS[0])
                if len(ys):
                    cells = np.stack([xs, ys], axis=1).astype(np.float64)
                    found = np.concatenate([np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale),
                                            probs[0, 1].numpy()[ys, xs][:, None],
                                            offsets[0].numpy()[:, ys, xs].T], axis=1)
                    proposals.append(found[_nms(found[:, :4], found[:, 4], 0.5)])
                scale, side = scale * PYRAMID_FACTOR, side * PYRAMID_FACTOR
            if not proposals:
                return []
            boxes = np.concatenate(proposals)
            boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.7)]
            boxes = _square(_regress(boxes[:, :5], boxes[:, 5:9]))
            offsets, probs = _run_rnet(self.nets["rnet"], _crops(image, boxes, 24))
            keep = probs[:, 1].numpy() > THRESHOLDS[1]
            boxes, offsets = boxes[keep], offsets.numpy()[keep]
            boxes[:, 4] = probs[:, 1].numpy()[keep]
            if not len(boxes):
                return []
            picked = _nms(boxes[:, :4], boxes[:, 4], 0.7)
            boxes = _square(_regress(boxes[picked], offsets[picked]))
            return self.refine(image, boxes)

    def refine(self, image: Any, boxes: np.ndarray) -> list[Face]:
        """O-Net on candidate boxes: the faces it accepts, with landmarks."""
        import torch

        with torch.inference_mode():
            offsets, points, probs = _run_onet(self.nets["onet"], _crops(image, boxes, 48))
        scores = probs[:, 1].numpy()
        keep = scores > THRESHOLDS[2]
        if not keep.any():
            return []
        boxes, offsets, points, scores = boxes[keep], offsets.numpy()[keep], points.numpy()[keep], scores[keep]
        w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        xs = boxes[:, 0:1] + w[:, None] * points[:, :5] - 1
        ys = boxes[:, 1:2] + h[:, None] * points[:, 5:] - 1
        boxes = _regress(boxes, offsets)
        boxes[:, 4] = scores
        order = _nms(boxes[:, :4], scores, 0.7, by_min=True)
        return [Face(tuple(float(v) for v in boxes[i, :4]), float(scores[i]),
                     np.stack([xs[i], ys[i]], axis=1)) for i in order]


@dataclass
class FaceMouthTracker:
    """Mouth openness per frame of a real clip, from MTCNN's mouth corners."""

    detector: MtcnnDetector = field(default_factory=MtcnnDetector)
    faces_found: int = 0

    def openness(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        import torch

        values, face = [], None
        for frame in frames:
            image = torch.from_numpy(np.array(frame, np.float32)).permute(2, 0, 1)[None]
            if face is not None:  # follow the face: one O-Net pass on last frame's box
                followed = self.detector.refine(image, _square(np.array([[*face.box, face.score]])))
                face = followed[0] if followed else None
            if face is None:
                found = self.detector.detect(frame)
                face = found[0] if found else None
            if face is None:
                values.append(np.nan)
                continue
            self.faces_found += 1
            values.append(mouth_openness(frame, face))
        out = np.array(values, np.float32)
        if np.isnan(out).all():
            return np.zeros(len(out), np.float32)
        return np.nan_to_num(out, nan=float(np.nanmin(out)))


def mouth_openness(frame: np.ndarray, face: Face) -> float:
    """The share of pixels between and below the mouth corners darker than half the face's median brightness."""
    (lx, ly), (rx, ry) = face.landmarks[3], face.landmarks[4]
    width = max(rx - lx, 4.0)
    middle = (ly + ry) / 2
    x0, x1 = int(lx + 0.1 * width), int(rx - 0.1 * width) + 1
    y0, y1 = int(middle - 0.25 * width), int(middle + 0.6 * width) + 1
    fx0, fy0, fx1, fy1 = (int(v) for v in face.box)
    face_pixels = _luma(frame[max(fy0, 0):max(fy1, 1), max(fx0, 0):max(fx1, 1)])  # per region, not the whole frame
    mouth = _luma(frame[max(y0, 0):max(y1, 1), max(x0, 0):max(x1, 1)])
    if not mouth.size or not face_pixels.size:
        return 0.0
    return float(np.mean(mouth < 0.5 * float(np.median(face_pixels))))


def _luma(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
