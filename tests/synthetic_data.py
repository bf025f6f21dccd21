"""Small synthetic datasets in the real on-disk formats (COCO json + JPEGs, ADEChallengeData2016)."""
import json
import os
from typing import List, Tuple

import cv2
import numpy as np

SHAPES = ("square", "disc")  # category 1 and 2


def _draw_objects(rng: np.random.Generator, height: int, width: int, count: int
                  ) -> Tuple[np.ndarray, List[Tuple[int, List[float], List[float]]]]:
    """A noisy background with `count` red squares / blue discs; returns (BGR image, [(category, polygon, bbox)])."""
    image = rng.integers(90, 140, (height, width, 3)).astype(np.uint8)
    objects = []
    for _ in range(count):
        category = int(rng.integers(1, 3))
        size = int(rng.integers(min(height, width) // 5, min(height, width) // 3))
        x0, y0 = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
        if category == 1:
            polygon = np.array([[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size]], np.int32)
            colour = (30, 30, 220)
        else:
            angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            centre, radius = np.array([x0 + size / 2, y0 + size / 2]), size / 2
            polygon = (centre + radius * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.int32)
            colour = (220, 60, 30)
        cv2.fillPoly(image, [polygon], colour)
        xs, ys = polygon[:, 0], polygon[:, 1]
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]
        objects.append((category, polygon.astype(float).ravel().tolist(), bbox))
    return image, objects


def write_coco(root: str, splits=(("train", 8), ("val", 3)), size=(200, 260), seed: int = 0) -> str:
    """root/{split}/*.jpg and root/annotations/instances_{split}.json; returns root."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    annotation_id = 1
    for split, count in splits:
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, objects = _draw_objects(rng, size[0], size[1], int(rng.integers(1, 4)))
            name = f"{split}_{index:03d}.jpg"
            cv2.imwrite(os.path.join(root, split, name), image)
            image_id = index + 1
            images.append({"id": image_id, "file_name": name, "height": size[0], "width": size[1]})
            for category, polygon, bbox in objects:
                annotations.append({"id": annotation_id, "image_id": image_id, "category_id": category,
                                    "segmentation": [polygon], "bbox": bbox, "area": bbox[2] * bbox[3],
                                    "iscrowd": 0})
                annotation_id += 1
        coco = {"images": images, "annotations": annotations,
                "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPES)]}
        with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as handle:
            json.dump(coco, handle)
    return root


def write_ade20k(root: str, splits=(("training", 8), ("validation", 3)), size=(96, 128), seed: int = 0) -> str:
    """root/ADEChallengeData2016/{images,annotations}/{training,validation}: JPEGs and PNG label maps.

    Labels follow ADE20K: 0 = unlabelled (ignored), 1..150 classes; here a learnable layout of classes
    1-3 (left/right halves and a bright square), coloured consistently in the image.
    """
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "ADEChallengeData2016")
    colours = {1: (40, 160, 40), 2: (160, 40, 40), 3: (230, 230, 230)}
    for split, count in splits:
        for kind in ("images", "annotations"):
            os.makedirs(os.path.join(base, kind, split), exist_ok=True)
        for index in range(count):
            height, width = size
            label = np.ones((height, width), np.uint8)
            split_at = int(rng.integers(width // 3, 2 * width // 3))
            label[:, split_at:] = 2
            side = int(rng.integers(height // 5, height // 3))
            y0, x0 = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
            label[y0:y0 + side, x0:x0 + side] = 3
            label[:2, :] = 0  # a strip of unlabelled pixels
            image = np.zeros((height, width, 3), np.uint8)
            for value, colour in colours.items():
                image[label == value] = colour
            image = np.clip(image.astype(int) + rng.integers(-25, 25, image.shape), 0, 255).astype(np.uint8)
            name = f"ADE_{split}_{index:08d}"
            cv2.imwrite(os.path.join(base, "images", split, name + ".jpg"), image)
            cv2.imwrite(os.path.join(base, "annotations", split, name + ".png"), label)
    return root
