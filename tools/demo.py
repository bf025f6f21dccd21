"""Run the Swin-T backbone on a built-in picture and print the four feature shapes."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from swin_backbone import create_backbone  # noqa: E402
from swin_backbone.runtime import set_num_threads  # noqa: E402


def builtin_image(height: int = 250, width: int = 333) -> np.ndarray:
    """[1, 3, H, W] float32: colour gradients and a disc, an awkward size that needs padding."""
    rows, cols = np.mgrid[0:height, 0:width].astype("float32")
    disc = ((rows - height / 2) ** 2 + (cols - width / 3) ** 2 < (height / 4) ** 2).astype("float32")
    image = np.stack([rows / height, cols / width, disc])
    return ((image - 0.45) / 0.25)[None]


def main() -> None:
    threads = set_num_threads()
    model = create_backbone("swin_tiny_patch4_window7_224")
    model.eval()
    x = paddle.to_tensor(builtin_image())
    start = time.perf_counter()
    with paddle.no_grad():
        features = model(x)
    elapsed = time.perf_counter() - start
    # list(): Paddle 3 prints a shape as paddle.Size([...])
    print(f"Swin-T backbone (random weights), input {list(x.shape)}, {threads} threads, {elapsed:.2f} s")
    for index, feature in zip(model.out_indices, features):
        print(f"  stage {index}: {list(feature.shape)} (stride {model.out_strides[index]})")


if __name__ == "__main__":
    main()
