"""Where inference runs: one place for the runtimes and precisions that infer.py and benchmark.py offer.

    runner = runtimes.create("openvino", "out/cls", precision="bf16", threads=2)
    outputs = runner(images)                     # float32 [N, 3, H, W] -> list of numpy outputs

Runtimes, each reading the files tools/export.py writes:
- paddle: Paddle Inference (model.pdmodel on Paddle 2.x, model.json on 3.x) in its default CPU configuration
  (oneDNN for every op, all fuse passes), as PaddleDetection's and PaddleSeg's deploy clients run it; bf16 is
  oneDNN's bfloat16 mode (`Config.enable_mkldnn_bfloat16`). Also --gpu / TensorRT.
- onnxruntime: model.onnx (export.py --onnx) on onnxruntime's CPU provider; fp32 only (its CPU provider
  has no bf16 kernels).
- openvino: OpenVINO's CPU plugin on model.pdmodel (its Paddle front end; Paddle 2.x exports) or model.onnx
  (any export with --onnx; Paddle 3.x's PIR model.json it cannot read). fp32 asks for f32 explicitly: on a
  CPU with AMX OpenVINO would otherwise pick bf16 by itself.

bf16 needs a CPU with AMX or AVX512-BF16 (detected from /proc/cpuinfo); elsewhere it is refused in one line,
because oneDNN and OpenVINO would emulate it, slower than fp32.
The package never imports OpenVINO or onnxruntime; this module imports them only when asked for them.
"""
import contextlib
import json
import os
import re
import sys
import time
from collections import OrderedDict
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from swin_backbone._cpu_tuning import cpu_features
from swin_backbone.errors import MalformedFileError, SwinInputError
from swin_backbone.runtime import available_cores

RUNTIMES = ("paddle", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
OPENVINO_SOURCES = ("pdmodel", "onnx")


def describe_cpu(features: Optional[dict] = None) -> str:
    """'<model> (AVX-512 yes, AVX512-BF16 yes, AMX yes)': what the benchmarks and errors print."""
    f = features or cpu_features()
    yes = {True: "yes", False: "no"}
    return (f"{f['model'] or 'unknown CPU'} (AVX-512 {yes[f['avx512']]}, AVX512-BF16 {yes[f['avx512_bf16']]}, "
            f"AMX {yes[f['amx_bf16']]})")


def cpu_has_bf16(features: Optional[dict] = None) -> bool:
    """True where the CPU computes bf16 natively: AMX (amx_bf16) or AVX512-BF16."""
    f = features or cpu_features()
    return bool(f["amx_bf16"] or f["avx512_bf16"])


def bf16_refusal(runtime: str, features: Optional[dict] = None) -> Optional[str]:
    """Why `runtime` cannot run bf16 on this CPU (one line), or None where it can."""
    if runtime == "onnxruntime":
        return ("--precision bf16: onnxruntime's CPU provider has no bf16 kernels; use --runtime openvino or "
                "--runtime paddle")
    if not cpu_has_bf16(features):
        return (f"--precision bf16 needs a CPU with AMX or AVX512-BF16; this one has neither: "
                f"{describe_cpu(features)}")
    return None


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


def trt_shape_ranges(input_names: List[str], sizes: Tuple[Tuple[int, int], ...], max_batch: int) -> Tuple[dict, ...]:
    """(min, max, opt) input shapes for TensorRT's dynamic-shape engine, from (min, opt, max) HxW sizes."""
    (min_h, min_w), (opt_h, opt_w), (max_h, max_w) = sizes
    per_input = {"image": ([1, 3, min_h, min_w], [max_batch, 3, max_h, max_w], [1, 3, opt_h, opt_w]),
                 "im_shape": ([1, 2], [max_batch, 2], [1, 2]), "scale_factor": ([1, 2], [max_batch, 2], [1, 2])}
    return tuple({name: per_input[name][i] for name in input_names if name in per_input} for i in range(3))


def feeds(images: np.ndarray, names: List[str], extra: Optional[Dict[str, np.ndarray]] = None
          ) -> Dict[str, np.ndarray]:
    """The inputs an export takes, from float32 [N, 3, H, W]; detectors also get im_shape and scale_factor
    (from `extra`, else the image's size and 1)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise SwinInputError(f"expected an input of shape [N, 3, H, W], got {list(images.shape)}")
    batch, _, height, width = images.shape
    every = {"image": np.ascontiguousarray(images, dtype=np.float32),
             "im_shape": np.tile(np.array([[height, width]], "float32"), (batch, 1)),
             "scale_factor": np.ones((batch, 2), "float32")}
    every.update({name: np.asarray(value, "float32") for name, value in (extra or {}).items()})
    return {name: every[name] for name in names}


@contextlib.contextmanager
def quiet_output(enabled: bool = True) -> Iterator[None]:
    """Send what C++ code writes to stdout and stderr (file descriptors 1, 2) to /dev/null for the duration."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


class Predictor:
    """Paddle Inference on one exported model directory: CPU (oneDNN by default; bf16 on request) or GPU."""

    runtime = "paddle"

    def __init__(self, model_dir: str, gpu: bool = False, threads: Optional[int] = None, onednn: bool = True,
                 gpu_id: int = 0, trt: Optional[str] = None,
                 trt_sizes: Tuple[Tuple[int, int], ...] = ((32, 32), (224, 224), (1333, 1333)), max_batch: int = 1,
                 precision: str = "fp32"):
        import paddle
        import paddle.inference as inference

        if gpu and not paddle.is_compiled_with_cuda():
            raise SwinInputError("--gpu: this Paddle has no CUDA (install paddlepaddle-gpu)")
        if precision == "bf16" and (gpu or not onednn):
            raise SwinInputError("--precision bf16 runs on oneDNN on the CPU (for the GPU use --trt fp16)")
        if precision == "bf16" and paddle.__version__.split(".")[0] != "2":
            # measured with Paddle 3.3.1 on our PIR exports: predictor.run() raises a bare "RuntimeError:
            # std::exception" in oneDNN's bf16 mode (Swin-T at 224 px, the CIFAR model at 32 px; not every size)
            raise SwinInputError(f"--runtime paddle --precision bf16: Paddle {paddle.__version__}'s oneDNN bf16 mode "
                                 "fails on Swin exports (std::exception); use --runtime openvino --precision bf16")
        # PaddleDetection 2.6's exported post-processing indexes 0-D tensors: Paddle 2.6 needs this flag.
        paddle.set_flags({"FLAGS_set_to_1d": True})
        config = inference.Config(*model_files(model_dir))
        config.disable_glog_info()
        if gpu:
            config.enable_use_gpu(256, gpu_id)
            if trt:
                if tuple(inference.get_trt_compile_version()) == (0, 0, 0):
                    raise SwinInputError("--trt: this Paddle was built without TensorRT")
                mode = inference.PrecisionType.Half if trt == "fp16" else inference.PrecisionType.Float32
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=max_batch, min_subgraph_size=3,
                                              precision_mode=mode, use_static=False, use_calib_mode=False)
                inputs = export_info(model_dir).get("inputs", ["image"])
                config.set_trt_dynamic_shape_info(*trt_shape_ranges(inputs, trt_sizes, max_batch))
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(threads or available_cores())
            # oneDNN as Paddle Inference sets it up by default (every op it has a kernel for, all its fuse passes),
            # which is also how PaddleDetection's and PaddleSeg's deploy clients run our exports.
            if onednn:
                config.enable_mkldnn()
                if precision == "bf16":
                    with quiet_output():  # "Hardware support for BFLOAT16 is enabled", past disable_glog_info
                        config.enable_mkldnn_bfloat16()
            else:
                config.disable_mkldnn()
        with quiet_output(precision == "bf16"):  # the bf16 passes print a dozen counts, past disable_glog_info
            self.predictor = inference.create_predictor(config)
        self.output_names = list(self.predictor.get_output_names())

    def __call__(self, images: np.ndarray, extra: Optional[Dict[str, np.ndarray]] = None) -> List[np.ndarray]:
        """float32 [N, 3, H, W] (and a detector's im_shape, scale_factor) -> the model's outputs."""
        for name, value in feeds(images, self.predictor.get_input_names(), extra).items():
            handle = self.predictor.get_input_handle(name)
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]


def onnx_file(model_dir: str) -> str:
    path = os.path.join(model_dir, "model.onnx")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model.onnx in {model_dir}: export with tools/export.py --onnx")
    return path


class OnnxRuntime:
    """onnxruntime's CPU provider on model.onnx (fp32)."""

    runtime = "onnxruntime"

    def __init__(self, model_dir: str, threads: Optional[int] = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        self.session = onnxruntime.InferenceSession(onnx_file(model_dir), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> List[np.ndarray]:
        return self.session.run(None, feeds(images, self.input_names))


def openvino_source(model_dir: str, source: Optional[str] = None) -> str:
    """The file OpenVINO reads: model.pdmodel (its Paddle front end) unless `source` is "onnx" or there is none."""
    pdmodel = os.path.join(model_dir, "model.pdmodel")
    if source == "pdmodel" or (source is None and os.path.isfile(pdmodel)):
        if not os.path.isfile(pdmodel):
            raise FileNotFoundError(f"no model.pdmodel in {model_dir} (OpenVINO's Paddle front end reads Paddle 2.x "
                                    "exports; Paddle 3.x writes model.json, which it cannot read: use model.onnx)")
        return pdmodel
    if not os.path.isfile(os.path.join(model_dir, "model.onnx")) and os.path.isfile(os.path.join(model_dir, "model.json")):
        raise FileNotFoundError(f"OpenVINO cannot read {model_dir}/model.json (Paddle 3.x's PIR format): export with "
                                "tools/export.py --onnx and it reads model.onnx")
    return onnx_file(model_dir)


def read_openvino_model(core, path: str):
    """core.read_model(path), its failures turned into one line naming the file and the op OpenVINO lacks."""
    try:
        return core.read_model(path)
    except RuntimeError as error:
        missing = re.search(r"No creator found for (\S+) node", str(error))
        if missing:
            raise SwinInputError(f"OpenVINO cannot read {path}: its Paddle front end has no converter for the op "
                                 f"{missing.group(1)}") from None
        raise


class OpenVINO:
    """OpenVINO's CPU plugin on model.pdmodel or model.onnx, at f32 or bf16 inference precision.

    It compiles the model once per input shape, on first use (the last MAX_SHAPES kept): measured here on the
    Swin-T classifier at 8x224 in bf16, a model compiled at the input's shape ran 1.42x (.pdmodel) and 1.17x
    (.onnx) faster than the same file compiled with dynamic shapes, whose shape arithmetic then runs on every
    call. It also sidesteps OpenVINO 2026.4's failure to compile Paddle2ONNX 2.1's dynamic-shape graph of a
    Paddle 3.x export ("Accessing out-of-range dimension"). A new shape costs one compilation (~1-3 s).
    """

    runtime = "openvino"
    MAX_SHAPES = 8

    def __init__(self, model_dir: str, precision: str = "fp32", threads: Optional[int] = None,
                 source: Optional[str] = None):
        import openvino

        self.core = openvino.Core()
        self.path = openvino_source(model_dir, source)
        model = read_openvino_model(self.core, self.path)  # fails here, in one line, on an op it lacks
        self.config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                       "INFERENCE_NUM_THREADS": threads or available_cores(), "PERFORMANCE_HINT": "LATENCY"}
        # a tensor can carry several names (the ONNX reader adds its producer's): take the export's own
        self.input_names = [_export_name(port.get_names(), ("image", "im_shape", "scale_factor"))
                            for port in model.inputs]
        self.output_names = [port.get_any_name() for port in model.outputs]
        self.model = model  # read once; each new shape compiles a reshaped clone
        self.compiled: "OrderedDict[tuple, tuple]" = OrderedDict()

    def _for_shapes(self, values: List[np.ndarray]) -> tuple:
        """(compiled model, infer request) for inputs of these shapes, compiled on first use."""
        key = tuple(v.shape for v in values)
        if key in self.compiled:
            self.compiled.move_to_end(key)
        else:
            model = self.model.clone()
            model.reshape({i: list(shape) for i, shape in enumerate(key)})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.compiled[key] = (compiled, compiled.create_infer_request())
            if len(self.compiled) > self.MAX_SHAPES:
                self.compiled.popitem(last=False)
        return self.compiled[key]

    def __call__(self, images: np.ndarray) -> List[np.ndarray]:
        named = feeds(images, self.input_names)
        values = [named[name] for name in self.input_names]
        compiled, request = self._for_shapes(values)
        results = request.infer(dict(enumerate(values)))
        return [np.array(results[output]) for output in compiled.outputs]


def _export_name(names: set, known: Tuple[str, ...]) -> str:
    return next((name for name in known if name in names), sorted(names)[0])


def create(runtime: str, model_dir: str, precision: str = "fp32", threads: Optional[int] = None,
           openvino_from: Optional[str] = None, **paddle_options) -> Callable[[np.ndarray], List[np.ndarray]]:
    """A runner for `runtime` on an exported model directory: runner(images) -> list of outputs.

    Raises SwinInputError (one line) for a precision this runtime or CPU cannot run, FileNotFoundError for a
    missing file, and ImportError with the extra to install for a runtime that is not installed.
    """
    if runtime not in RUNTIMES:
        raise SwinInputError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise SwinInputError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not paddle_options.get("gpu"):
        refusal = bf16_refusal(runtime)
        if refusal:
            raise SwinInputError(refusal)
    if runtime == "paddle":
        return Predictor(model_dir, threads=threads, precision=precision, **paddle_options)
    if paddle_options.get("gpu"):
        raise SwinInputError(f"--gpu runs Paddle Inference; --runtime {runtime} runs on the CPU here")
    extra = {"onnxruntime": "onnx", "openvino": "openvino"}[runtime]
    try:
        __import__(runtime)
    except ImportError as error:
        raise SwinInputError(f"--runtime {runtime} needs the {runtime} package (pip install '.[{extra}]'): "
                             f"{error}") from None
    if runtime == "onnxruntime":
        return OnnxRuntime(model_dir, threads)
    return OpenVINO(model_dir, precision, threads, openvino_from)


def time_runs(runner: Callable, images: np.ndarray, repeats: int) -> Tuple[list, list]:
    """(outputs, seconds of each of `repeats` timed runs after one warm-up)."""
    outputs = runner(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = runner(images)
        times.append(time.perf_counter() - start)
    return outputs, times


def max_difference(got: List[np.ndarray], want: List[np.ndarray]) -> Dict[str, float]:
    """{"max_abs": ..., "mismatch": ...}: the largest absolute difference over all float outputs, and the share
    of differing elements of integer outputs (class maps); shapes must agree."""
    diffs, mismatched, total = [0.0], 0, 0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise SwinInputError(f"output shapes differ from Paddle Inference fp32: {list(g.shape)} vs {list(w.shape)}")
        if np.issubdtype(w.dtype, np.floating):
            diffs.append(float(np.abs(g.astype("float64") - w).max()) if w.size else 0.0)
        else:
            mismatched += int((g != w).sum())
            total += w.size
    return {"max_abs": max(diffs), "mismatch": mismatched / total if total else 0.0}
