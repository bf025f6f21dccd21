"""Run an exported model (tools/export.py) with Paddle Inference and print timings.

    python tools/infer.py --model-dir out/cls --image cat.jpg            # cls: top-5; seg: writes a class map
    python tools/infer.py --model-dir out/backbone --size 800x1216 --batch 2 --repeats 10
    python tools/infer.py --model-dir out/det --size 250x333       # prints the output shapes (bbox, bbox_num, mask)
    add --gpu to run on GPU 0, --no-onednn to keep CPU kernels plain.
"""
import argparse
import json
import os
import sys
import time
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import numpy as np  # noqa: E402

from swin_backbone.errors import MalformedFileError, SwinInputError  # noqa: E402
from swin_backbone.runtime import available_cores, image_size, positive_int, run_tool  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], "float32")
STD = np.array([0.229, 0.224, 0.225], "float32")


class Predictor:
    """A Paddle Inference predictor for one exported model directory."""

    def __init__(self, model_dir: str, gpu: bool = False, threads: Optional[int] = None, onednn: bool = True):
        import paddle
        import paddle.inference as inference

        # PaddleDetection 2.6's exported post-processing indexes 0-D tensors: Paddle 2.6 needs this flag.
        paddle.set_flags({"FLAGS_set_to_1d": True})
        config = inference.Config(*model_files(model_dir))
        config.disable_glog_info()
        if gpu:
            config.enable_use_gpu(256, 0)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(threads or available_cores())
            # oneDNN as Paddle Inference sets it up by default (every op it has a kernel for, all its fuse passes),
            # which is also how PaddleDetection's and PaddleSeg's deploy clients run our exports.
            if onednn:
                config.enable_mkldnn()
            else:
                config.disable_mkldnn()
        self.predictor = inference.create_predictor(config)

    def __call__(self, images: np.ndarray) -> List[np.ndarray]:
        """float32 [N, 3, H, W] -> the model's outputs (detectors also get im_shape and scale_factor 1)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise SwinInputError(f"expected an input of shape [N, 3, H, W], got {list(images.shape)}")
        batch, _, height, width = images.shape
        feeds = {"image": np.ascontiguousarray(images, dtype=np.float32),
                 "im_shape": np.tile(np.array([[height, width]], "float32"), (batch, 1)),
                 "scale_factor": np.ones((batch, 2), "float32")}
        for name in self.predictor.get_input_names():
            handle = self.predictor.get_input_handle(name)
            handle.reshape(list(feeds[name].shape))
            handle.copy_from_cpu(feeds[name])
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.predictor.get_output_names()]


def model_files(model_dir: str) -> Tuple[str, str]:
    """(program, parameters) of an exported model: model.pdmodel as Paddle 2.x writes it, or model.json (PIR)
    as Paddle 3.x does. Paddle 3.x reads both; Paddle 2.x only the first."""
    import paddle

    paddle3 = paddle.__version__.split(".")[0] != "2"
    params = os.path.join(model_dir, "model.pdiparams")
    for name in ("model.json", "model.pdmodel") if paddle3 else ("model.pdmodel",):
        if os.path.isfile(os.path.join(model_dir, name)) and os.path.isfile(params):
            return os.path.join(model_dir, name), params
    if os.path.isfile(os.path.join(model_dir, "model.json")) and not paddle3:
        raise FileNotFoundError(f"{model_dir} holds a model exported by Paddle 3.x (model.json, PIR), which Paddle "
                                f"{paddle.__version__} cannot read: re-export it with tools/export.py under this Paddle")
    raise FileNotFoundError(f"no exported model in {model_dir}: expected model.pdmodel (Paddle 2.x) or model.json "
                            "(Paddle 3.x) with model.pdiparams (write them with tools/export.py)")


def load_image(path: str, size: Optional[int]) -> np.ndarray:
    """An image file -> normalised float32 [1, 3, H, W] (resized to size x size when given)."""
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"--image: cannot read a picture at {path}")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return ((image.astype("float32") / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].copy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--image", help="a picture (otherwise random input of --size)")
    parser.add_argument("--size", type=image_size, default=(224, 224), help="HxW of random input")
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--threads", type=positive_int)
    parser.add_argument("--no-onednn", action="store_true")
    parser.add_argument("--output", help="where seg writes its class map (PNG)")
    args = parser.parse_args(argv)
    info_path = os.path.join(args.model_dir, "export.json")
    info = {"task": "unknown"}
    if os.path.isfile(info_path):
        try:
            with open(info_path) as handle:
                info = dict(json.load(handle))
        except (ValueError, TypeError) as error:
            raise MalformedFileError(f"{info_path}: not a readable export description ({error})") from None
    predictor = Predictor(args.model_dir, args.gpu, args.threads, not args.no_onednn)  # exactly the folder given
    if args.image:
        images = load_image(args.image, None)
    else:
        height, width = args.size
        images = np.random.rand(args.batch, 3, height, width).astype("float32")
    outputs = predictor(images)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        outputs = predictor(images)
        times.append(time.perf_counter() - start)
    print(f"{info['task']} {list(images.shape)}: median {1000 * np.median(times):.1f} ms over {args.repeats} runs "
          f"({'GPU' if args.gpu else 'CPU'}); outputs {[list(o.shape) for o in outputs]}")
    if info["task"] == "cls":
        logits = outputs[0][0]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        for index in np.argsort(-probs)[:5]:
            print(f"  class {index}: {100 * probs[index]:.2f}%")
    if info["task"] == "seg" and args.output:
        import cv2

        cv2.imwrite(args.output, outputs[0][0].astype("uint8"))
        print(f"class map written to {args.output}")
    return outputs


if __name__ == "__main__":
    run_tool(main)
