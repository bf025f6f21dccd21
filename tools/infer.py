"""Run an exported model (tools/export.py) and print the time per batch.

    python tools/infer.py --model-dir out/cls --image cat.jpg            # cls: top-5; seg: writes a class map
    python tools/infer.py --model-dir out/backbone --size 800x1216 --batch 2 --repeats 10
    python tools/infer.py --model-dir out/cls --runtime openvino --precision bf16 --batch 8 --check
    python tools/infer.py --model-dir out/det --size 250x333       # prints the output shapes (bbox, bbox_num, mask)
    python tools/infer.py --model-dir out/backbone --gpu [--gpu-id 1] [--trt fp16 --trt-sizes 224x224:800x1216:1333x1333]

--runtime paddle (default) runs Paddle Inference's default CPU configuration (oneDNN for every op, all fuse
passes), as PaddleDetection's and PaddleSeg's deploy clients do; --no-onednn keeps the plain CPU kernels.
--runtime onnxruntime runs model.onnx; --runtime openvino runs model.pdmodel (or model.onnx: --openvino-from).
--precision bf16 needs a CPU with AMX or AVX512-BF16 (refused in one line elsewhere, and by onnxruntime).
--check also runs Paddle Inference fp32 on the same input and prints the largest difference from it.
--gpu runs on a GPU (paddlepaddle-gpu), --trt adds TensorRT subgraphs (a Paddle built with TensorRT) for input
sizes between the smallest and largest of --trt-sizes MIN:OPT:MAX and batches up to --batch.
The runtimes themselves live in tools/runtimes.py, which benchmark.py shares.
"""
import argparse
import os
import sys
from typing import Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import numpy as np  # noqa: E402

from swin_backbone.runtime import image_size, non_negative_int, positive_int, run_tool  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runtimes  # noqa: E402
from runtimes import (Predictor, describe_cpu, export_info, max_difference, model_files,  # noqa: E402,F401
                      trt_shape_ranges)

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
    parser.add_argument("--runtime", choices=runtimes.RUNTIMES, default="paddle")
    parser.add_argument("--precision", choices=runtimes.PRECISIONS, default="fp32",
                        help="bf16: on a CPU with AMX or AVX512-BF16 (paddle: oneDNN's bf16 mode; openvino)")
    parser.add_argument("--openvino-from", choices=runtimes.OPENVINO_SOURCES,
                        help="the file OpenVINO reads (default: model.pdmodel where there is one, else model.onnx)")
    parser.add_argument("--check", action="store_true",
                        help="also run Paddle Inference fp32 on the same input and print the largest difference")
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
    if args.runtime != "paddle" and (args.gpu or args.no_onednn):
        parser.error(f"--gpu and --no-onednn are Paddle Inference switches, not --runtime {args.runtime}'s")
    if args.openvino_from and args.runtime != "openvino":
        parser.error("--openvino-from needs --runtime openvino")
    info = export_info(args.model_dir)
    paddle_options = {"gpu": args.gpu, "onednn": not args.no_onednn, "gpu_id": args.gpu_id, "trt": args.trt,
                      "trt_sizes": args.trt_sizes, "max_batch": args.batch} if args.runtime == "paddle" else {}
    runner = runtimes.create(args.runtime, args.model_dir, args.precision, args.threads, args.openvino_from,
                             **paddle_options)  # exactly the folder given
    if args.image:
        images = load_image(args.image, None)
    else:
        height, width = args.size
        images = np.random.rand(args.batch, 3, height, width).astype("float32")
    outputs, times = runtimes.time_runs(runner, images, args.repeats)
    device = "GPU" if args.gpu else f"CPU: {describe_cpu()}"
    source = f" on {os.path.basename(runner.path)}" if args.runtime == "openvino" else ""
    print(f"{info['task']} {list(images.shape)}, {args.runtime}{source} {args.precision}: "
          f"{1000 * np.median(times):.1f} ms per batch (median of {args.repeats} runs, {device}); "
          f"outputs {[list(o.shape) for o in outputs]}")
    if args.check:
        reference = outputs if (args.runtime, args.precision) == ("paddle", "fp32") and not args.gpu else \
            Predictor(args.model_dir, threads=args.threads)(images)
        diff = max_difference(outputs, reference)
        print(f"check against Paddle Inference fp32 on the same input: max abs difference {diff['max_abs']:.3g}"
              + (f", {100 * diff['mismatch']:.3f}% of labels differ" if info["task"] == "seg" else ""))
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
