"""Run an exported model (tools/export.py) with Paddle Inference and print timings.

    python tools/infer.py --model-dir out/cls --image cat.jpg            # cls: top-5; seg: writes a class map
    python tools/infer.py --model-dir out/backbone --size 800x1216 --batch 2 --repeats 10
    python tools/infer.py --model-dir out/det --size 250x333       # prints the output shapes (bbox, bbox_num, mask)
    python tools/infer.py --model-dir out/backbone --gpu [--gpu-id 1] [--trt fp16 --trt-sizes 224x224:800x1216:1333x1333]

On CPU it runs Paddle Inference's default configuration (oneDNN for every op, all fuse passes), as
PaddleDetection's and PaddleSeg's deploy clients do; --no-onednn keeps the plain CPU kernels. --gpu runs on a GPU
(paddlepaddle-gpu), --trt adds TensorRT subgraphs (a Paddle built with TensorRT) for input sizes between the
smallest and largest of --trt-sizes MIN:OPT:MAX and batches up to --batch.
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
from swin_backbone.runtime import (available_cores, image_size, non_negative_int, positive_int,  # noqa: E402
                                   run_tool)

MEAN = np.array([0.485, 0.456, 0.406], "float32")
STD = np.array([0.229, 0.224, 0.225], "float32")


TRT_PRECISIONS = ("fp32", "fp16")


def size_range(text: str) -> Tuple[Tuple[int, int], ...]:
    """An argparse type for MIN:OPT:MAX sizes, each HxW, growing from MIN to MAX."""
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:OPT:MAX sizes such as 32x32:224x224:1333x1333")
    sizes = tuple(image_size(part) for part in parts)
    if not all(a <= b for lo, hi in zip(sizes, sizes[1:]) for a, b in zip(lo, hi)):
        raise argparse.ArgumentTypeError(f"{text!r}: each size must be at most the next (MIN <= OPT <= MAX)")
    return sizes


def trt_shape_ranges(input_names: List[str], sizes: Tuple[Tuple[int, int], ...], max_batch: int) -> Tuple[dict, ...]:
    """(min, max, opt) input shapes for TensorRT's dynamic-shape engine, from (min, opt, max) HxW sizes."""
    (min_h, min_w), (opt_h, opt_w), (max_h, max_w) = sizes
    per_input = {"image": ([1, 3, min_h, min_w], [max_batch, 3, max_h, max_w], [1, 3, opt_h, opt_w]),
                 "im_shape": ([1, 2], [max_batch, 2], [1, 2]), "scale_factor": ([1, 2], [max_batch, 2], [1, 2])}
    return tuple({name: per_input[name][i] for name in input_names if name in per_input} for i in range(3))


class Predictor:
    """A Paddle Inference predictor for one exported model directory."""

    def __init__(self, model_dir: str, gpu: bool = False, threads: Optional[int] = None, onednn: bool = True,
                 gpu_id: int = 0, trt: Optional[str] = None,
                 trt_sizes: Tuple[Tuple[int, int], ...] = ((32, 32), (224, 224), (1333, 1333)), max_batch: int = 1):
        import paddle
        import paddle.inference as inference

        if gpu and not paddle.is_compiled_with_cuda():
            raise SwinInputError("--gpu: this Paddle has no CUDA (install paddlepaddle-gpu)")
        # PaddleDetection 2.6's exported post-processing indexes 0-D tensors: Paddle 2.6 needs this flag.
        paddle.set_flags({"FLAGS_set_to_1d": True})
        config = inference.Config(*model_files(model_dir))
        config.disable_glog_info()
        if gpu:
            config.enable_use_gpu(256, gpu_id)
            if trt:
                if tuple(inference.get_trt_compile_version()) == (0, 0, 0):
                    raise SwinInputError("--trt: this Paddle was built without TensorRT")
                precision = inference.PrecisionType.Half if trt == "fp16" else inference.PrecisionType.Float32
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=max_batch, min_subgraph_size=3,
                                              precision_mode=precision, use_static=False, use_calib_mode=False)
                inputs = export_info(model_dir).get("inputs", ["image"])
                config.set_trt_dynamic_shape_info(*trt_shape_ranges(inputs, trt_sizes, max_batch))
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


def export_info(model_dir: str) -> dict:
    """The export.json tools/export.py writes beside a model ({"task": "unknown"} where there is none)."""
    path = os.path.join(model_dir, "export.json")
    if not os.path.isfile(path):
        return {"task": "unknown"}
    try:
        with open(path) as handle:
            return dict(json.load(handle))
    except (ValueError, TypeError) as error:
        raise MalformedFileError(f"{path}: not a readable export description ({error})") from None


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
    parser.add_argument("--gpu", action="store_true", help="run on a GPU (paddlepaddle-gpu)")
    parser.add_argument("--gpu-id", type=non_negative_int, default=0)
    parser.add_argument("--trt", choices=TRT_PRECISIONS, help="with --gpu: TensorRT subgraphs at this precision")
    parser.add_argument("--trt-sizes", type=size_range, default=((32, 32), (224, 224), (1333, 1333)),
                        help="MIN:OPT:MAX input sizes HxW of the TensorRT engine (default 32x32:224x224:1333x1333)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    parser.add_argument("--no-onednn", action="store_true", help="plain CPU kernels instead of oneDNN")
    parser.add_argument("--output", help="where seg writes its class map (PNG)")
    args = parser.parse_args(argv)
    if args.trt and not args.gpu:
        parser.error("--trt needs --gpu")
    info = export_info(args.model_dir)
    predictor = Predictor(args.model_dir, args.gpu, args.threads, not args.no_onednn, args.gpu_id, args.trt,
                          args.trt_sizes, args.batch)  # exactly the folder given
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
