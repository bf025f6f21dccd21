"""Side-by-side speed and memory of our Swin-T backbone and the Swin backbones PaddleDetection and
PaddleSeg ship, on the same weights, in one run.

    python tools/benchmark.py [--threads N] [--repeats 5] [--json benchmark.json] [--quick] [--deploy-only]

Deployment rows (also alone with --deploy-only): Swin-T exported (tools/export.py --onnx) as a classifier at
8x3x224x224 and 1x3x512x512, the UperNet Swin-T at 1x3x512x512 and the backbone at 1x3x800x1216, each run by
every runtime x precision of tools/runtimes.py (Paddle Inference fp32 / oneDNN bf16, onnxruntime, OpenVINO
on model.pdmodel and on model.onnx at f32 / bf16) on the same input, timed interleaved: img/s, the ratio to
Paddle Inference fp32 and the difference from its outputs, then the README's table and the goal's ratios.
bf16 runs only on a CPU with AMX or AVX512-BF16 (the CPU's features are printed).

Rows: eager inference at 8x3x224x224, 1x3x512x512, 1x3x800x1216 and one training step (forward +
backward) at 2x3x224x224, timed interleaved (each repeat runs every contender once) after a warm-up;
the table shows medians and peer/ours ratios. Then peak memory of a Swin-T training step at
2x3x512x512 with and without use_checkpoint, each in a fresh subprocess (peak of Paddle's allocator
during the step, CPU host or GPU device memory, and on Linux the growth of the process's peak RSS), and
the training throughput of the CIFAR recipe's default model.

Importing swin_backbone applies two process-wide CPU settings (swin_backbone/_cpu_tuning.py), so every
contender in this process runs with them; the "out of the box" row times the peers in a fresh process
without them, on Paddle's default threads, as their users run them.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

# The memory workers get the environment as it was before paddle, paddledet and paddleseg changed it.
CLEAN_ENV = dict(os.environ)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from swin_backbone import create_backbone, create_classifier  # noqa: E402
from swin_backbone._cpu_tuning import cpu_features  # noqa: E402
from swin_backbone.runtime import cpu_tuning, non_negative_int, positive_int, run_tool, set_num_threads  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runtimes  # noqa: E402  (tools/runtimes.py: the runtimes infer.py offers)

INFER_ROWS = [(8, 224, 224), (1, 512, 512), (1, 800, 1216)]
TRAIN_ROW = (2, 224, 224)
TINY = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7)


def synchronize() -> None:
    if paddle.is_compiled_with_cuda() and "gpu" in paddle.get_device():
        paddle.device.cuda.synchronize()


def build_contenders(seed: int = 0) -> Dict[str, Callable]:
    """{name: callable(x) -> list of features}, all holding our (random) Swin-T weights; peers that fail
    to import are reported and left out."""
    paddle.seed(seed)
    ours = create_backbone("swin_tiny_patch4_window7_224", drop_path_rate=0.0)
    weights = ours.state_dict()
    contenders = {"ours": ours}
    try:
        from ppdet.modeling.backbones.swin_transformer import SwinTransformer as DetSwin

        det = DetSwin(**TINY, drop_path_rate=0.0, out_indices=(0, 1, 2, 3))
        det.set_state_dict(weights)
        contenders["paddledet"] = det
    except Exception as error:  # a missing or broken peer is reported, not fatal
        print(f"skipping PaddleDetection's SwinTransformer: {type(error).__name__}: {error}")
    try:
        from paddleseg.models.backbones.swin_transformer import SwinTransformer_tiny_patch4_window7_224

        seg = SwinTransformer_tiny_patch4_window7_224(drop_path_rate=0.0)
        seg.set_state_dict(weights)
        contenders["paddleseg"] = seg
    except Exception as error:
        print(f"skipping PaddleSeg's SwinTransformer: {type(error).__name__}: {error}")
    calls = {}
    for name, model in contenders.items():
        calls[name] = _caller(name, model)
    return calls


def _caller(name: str, model: paddle.nn.Layer) -> Callable:
    def run(x: paddle.Tensor) -> List[paddle.Tensor]:
        return list(model({"image": x}) if name == "paddledet" else model(x))

    run.model = model
    return run


def check_agreement(contenders: Dict[str, Callable]) -> Dict[str, float]:
    """Max abs difference of every peer's four outputs from ours at 1x3x224x224 (eval)."""
    x = paddle.randn([1, 3, 224, 224])
    diffs = {}
    with paddle.no_grad():
        for run in contenders.values():
            run.model.eval()
        reference = contenders["ours"](x)
        for name, run in contenders.items():
            if name != "ours":
                diffs[name] = max(float((a - b).abs().max()) for a, b in zip(reference, run(x)))
    return diffs


def time_interleaved(contenders: Dict[str, Callable], make_step: Callable, repeats: int, warmup: int,
                     threads: Dict[str, Optional[int]]) -> Dict[str, Optional[float]]:
    """Median seconds per step of each contender (None where it crashes), interleaving the repeats;
    `threads` gives each contender its CPU threads (None: leave Paddle's setting)."""
    def use_threads(name: str) -> None:
        if threads[name]:
            set_num_threads(threads[name])

    steps, times = {}, {}
    for name, run in contenders.items():
        steps[name] = make_step(run)
        times[name] = []
        try:
            use_threads(name)
            for _ in range(warmup):
                steps[name]()
        except Exception as error:
            print(f"  {name} crashed: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
            steps[name] = None
    for _ in range(repeats):
        for name, step in steps.items():
            if step is None:
                continue
            use_threads(name)
            synchronize()
            start = time.perf_counter()
            step()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(t)) if steps[name] else None) for name, t in times.items()}


def inference_step(shape) -> Callable:
    x = paddle.randn(list(shape[:1]) + [3] + list(shape[1:]))

    def make(run: Callable) -> Callable:
        run.model.eval()

        def step() -> None:
            with paddle.no_grad():
                run(x)
        return step
    return make


def training_step(shape) -> Callable:
    x = paddle.randn(list(shape[:1]) + [3] + list(shape[1:]))

    def make(run: Callable) -> Callable:
        run.model.train()

        def step() -> None:
            sum(o.mean() for o in run(x)).backward()
            run.model.clear_gradients()
        return step
    return make


def memory_worker(use_checkpoint: bool, size: int) -> None:
    """Subprocess body: Swin-T training steps at 2x3xSxS; prints JSON with the first one's peak memory and
    the median time of two more.

    step_mb is the peak of Paddle's own allocator during the step above what was allocated before it
    (deterministic); step_rss_mb the growth of the process's peak resident memory over its resident size
    before the step (VmHWM: unlike ru_maxrss it starts afresh at exec, so the parent's size does not leak in).
    """
    model = create_backbone("swin_tiny_patch4_window7_224", use_checkpoint=use_checkpoint)
    model.train()
    x = paddle.randn([2, 3, size, size])
    gpu = "gpu" in paddle.get_device()
    core = paddle.base.core
    place = "device" if gpu else "host"

    def stat(kind: str) -> int:
        return getattr(core, f"{place}_memory_stat_{kind}_value")("Allocated", 0)

    def step() -> float:
        start = time.perf_counter()
        sum(o.mean() for o in model(x)).backward()
        model.clear_gradients()
        synchronize()
        return time.perf_counter() - start

    before, rss_before = stat("current"), resident_mb("VmRSS")
    step()  # the first step: its allocator peak is the memory figure; later steps give the time, warm
    peak = stat("peak")
    seconds = float(np.median([step() for _ in range(2)]))
    rss_peak = resident_mb("VmHWM")
    step_rss = rss_peak - rss_before if rss_peak and rss_before else None
    print(json.dumps({"step_mb": (peak - before) / 2 ** 20, "step_rss_mb": step_rss, "peak_rss_mb": rss_peak,
                      "seconds": seconds}))


def resident_mb(field: str = "VmHWM") -> Optional[float]:
    """This process's peak (VmHWM) or current (VmRSS) resident memory in MB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure_memory(threads: int, size: int) -> Dict[str, dict]:
    results = {}
    for label, flag in (("without", False), ("with", True)):
        command = [sys.executable, os.path.abspath(__file__), "--memory-worker", str(int(flag)),
                   "--memory-size", str(size), "--threads", str(threads)]
        output = subprocess.run(command, capture_output=True, text=True, check=True, env=CLEAN_ENV).stdout
        results[label] = json.loads(output.strip().splitlines()[-1])
    return results


def peers_out_of_the_box_worker(repeats: int, warmup: int) -> None:
    """Subprocess body: the peers as their users run them (no swin_backbone CPU tuning, Paddle's default
    threads), inference at the first row's shape; prints JSON {peer: median seconds}."""
    contenders = build_contenders()
    del contenders["ours"]
    times = time_interleaved(contenders, inference_step(INFER_ROWS[0]), repeats, warmup,
                             {name: None for name in contenders})
    print(json.dumps(times))


def peers_out_of_the_box(repeats: int, warmup: int) -> Dict[str, Optional[float]]:
    env = dict(CLEAN_ENV, SWIN_PADDLE_CPU_TUNING="0")
    command = [sys.executable, os.path.abspath(__file__), "--peers-default-worker",
               "--repeats", str(repeats), "--warmup", str(warmup)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def cls_throughput(threads: int, batch: int, repeats: int) -> float:
    """Training img/s of the CIFAR recipe's default model (swin_tiny_patch2_window4_32) at 32 px."""
    model = create_classifier("swin_tiny_patch2_window4_32", num_classes=10)
    model.train()
    optimizer = paddle.optimizer.AdamW(1e-3, parameters=model.parameters(), weight_decay=0.05,
                                       grad_clip=paddle.nn.ClipGradByGlobalNorm(5.0))
    x, y = paddle.randn([batch, 3, 32, 32]), paddle.randint(0, 10, [batch])
    times = []
    for i in range(repeats + 1):
        set_num_threads(threads)
        start = time.perf_counter()
        paddle.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        optimizer.step()
        optimizer.clear_grad()
        synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return batch / float(np.median(times))


def exported_inference(model: paddle.nn.Layer, shape, repeats: int, threads: int) -> float:
    """Median seconds of Paddle Inference (CPU, oneDNN for the heavy ops) on `model` exported to a temp dir."""
    import tempfile

    from export import export_static
    from runtimes import Predictor

    twin = create_backbone("swin_tiny_patch4_window7_224", drop_path_rate=0.0)
    twin.set_state_dict(model.state_dict())  # to_static converts in place: keep the eager model eager
    batch, height, width = shape
    images = np.random.rand(batch, 3, height, width).astype("float32")
    with tempfile.TemporaryDirectory() as folder:
        export_static(twin, folder)
        _, times = runtimes.time_runs(Predictor(folder, threads=threads), images, repeats)
    return float(np.median(times))


# Deployment rows: (label, export task, [N, H, W]); the exports hold random Swin-T weights (speed does not
# depend on them; the accuracy of each precision is measured on trained models in tests/test_openvino.py).
DEPLOY_ROWS = [("Swin-T classifier", "cls", (8, 224, 224)), ("Swin-T classifier", "cls", (1, 512, 512)),
               ("UperNet Swin-T", "seg", (1, 512, 512)), ("Swin-T backbone", "backbone", (1, 800, 1216))]
# (runtime, precision, file OpenVINO reads); the first is the reference of every ratio and difference
DEPLOY_PATHS = [("paddle", "fp32", None), ("paddle", "bf16", None), ("onnxruntime", "fp32", None),
                ("openvino", "fp32", "pdmodel"), ("openvino", "bf16", "pdmodel"),
                ("openvino", "fp32", "onnx"), ("openvino", "bf16", "onnx")]
UPERNET_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "seg_configs",
                              "upernet_swin_tiny_ade20k_512x512_160k.yml")


def export_for_deployment(task: str, folder: str) -> Optional[str]:
    """Export a Swin-T `task` (cls, backbone, seg) with model.onnx into folder; the reason where it cannot."""
    import contextlib
    import io

    from export import main as export_main

    args = ["--task", task, "--output", folder, "--onnx"]
    if task == "seg":
        args += ["--config", UPERNET_CONFIG]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            export_main(args)
    except (Exception, SystemExit) as error:  # e.g. PaddleSeg missing (Paddle 3.x): the row is reported, not fatal
        return f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"
    return None


def deployment_paths(folder: str, threads: int) -> Dict[str, Callable]:
    """{"runtime precision [file]": runner} for every deployment path that runs here; the others are printed."""
    paths = {}
    for runtime, precision, source in DEPLOY_PATHS:
        name = f"{runtime} {precision}" + (f" ({source})" if source else "")
        if source == "pdmodel" and not os.path.isfile(os.path.join(folder, "model.pdmodel")):
            continue  # Paddle 3.x writes model.json, which OpenVINO cannot read: the onnx rows stand for it
        try:
            paths[name] = runtimes.create(runtime, folder, precision, threads, openvino_from=source)
        except Exception as error:
            print(f"  {name}: not run: {str(error).splitlines()[0][:160]}")
    return paths


def deployment_rows(threads: int, repeats: int, warmup: int, quick: bool) -> List[dict]:
    """Every deployment path on each DEPLOY_ROWS input, timed interleaved; img/s, ratio, max difference."""
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as root:
        folders = {}
        rows = DEPLOY_ROWS[:2] if quick else DEPLOY_ROWS
        for task in dict.fromkeys(task for _, task, _ in rows):
            folders[task] = os.path.join(root, task)
            failure = export_for_deployment(task, folders[task])
            if failure:
                print(f"  {task}: not exported ({failure})")
                folders[task] = None
        for label, task, (batch, height, width) in rows:
            if not folders[task]:
                continue
            paths = deployment_paths(folders[task], threads)
            images = np.random.default_rng(0).random((batch, 3, height, width), dtype=np.float32)
            reference = paths["paddle fp32"](images)
            diffs = {name: runtimes.max_difference(run(images), reference) for name, run in paths.items()}
            times = time_interleaved({n: (lambda run=run: run(images)) for n, run in paths.items()},
                                     lambda step: step, repeats, warmup, {n: None for n in paths})
            base = times["paddle fp32"]
            for name, seconds in times.items():
                row = {"model": label, "input": f"{batch}x3x{height}x{width}", "path": name, "seconds": seconds,
                       "img_per_s": batch / seconds if seconds else None,
                       "ratio": base / seconds if seconds and base else None, **diffs[name]}
                results.append(row)
                print(f"  {label} {row['input']}: {name:<24} {fmt(seconds):>7} s {row['img_per_s'] or 0:8.2f} img/s "
                      f"x{row['ratio'] or 0:.2f}  {difference_text(task, row)}", flush=True)
            del paths
    return results


def difference_text(task: str, row: dict) -> str:
    if row["path"] == "paddle fp32":
        return "(reference)"
    if task == "seg":
        return f"{100 * row['mismatch']:.3f}% of labels differ"
    return f"max abs diff {row['max_abs']:.1e}"


def deployment_table(rows: List[dict]) -> str:
    """The README's deployment table (markdown) from deployment_rows()."""
    lines = ["| model, input | runtime, precision | seconds | img/s | vs Paddle Inference fp32 | difference from it |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        task = "seg" if row["model"].startswith("UperNet") else "cls"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "-"
        rate = f"{row['img_per_s']:.2f}" if row["img_per_s"] else "-"
        lines.append(f"| {row['model']} {row['input']} | {row['path']} | {fmt(row['seconds'])} | {rate} | {ratio} "
                     f"| {difference_text(task, row)} |")
    return "\n".join(lines)


def deployment_goal(rows: List[dict]) -> str:
    """The issue's goal, per row: the fastest path's ratio to Paddle Inference fp32 (8x224 and 800x1216)."""
    lines = []
    for model, shape in (("Swin-T classifier", "8x3x224x224"), ("Swin-T backbone", "1x3x800x1216")):
        timed = [r for r in rows if r["model"] == model and r["input"] == shape and r["ratio"]]
        if timed:
            best = max(timed, key=lambda r: r["ratio"])
            fp32 = max((r for r in timed if "fp32" in r["path"] and r["path"] != "paddle fp32"),
                       key=lambda r: r["ratio"], default=None)
            lines.append(f"{model} {shape}: fastest {best['path']} {best['ratio']:.2f}x Paddle Inference fp32"
                         + (f"; fastest fp32 {fp32['path']} {fp32['ratio']:.2f}x" if fp32 else ""))
    return "\n".join(lines)


def versions() -> str:
    found = [f"paddle {paddle.__version__}"]
    for module in ("openvino", "onnxruntime"):
        try:
            found.append(f"{module} {__import__(module).__version__.split('-')[0]}")
        except ImportError:
            found.append(f"{module} not installed")
    return ", ".join(found)


def fmt(seconds: Optional[float]) -> str:
    return "crash" if seconds is None else f"{seconds:.3f}"


def load_average() -> str:
    """The 1-minute load average and the core count: timings taken under others' load say so."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else "unknown"


def deploy_section(results: dict, threads: int, repeats: int, args: argparse.Namespace, write: bool = True) -> dict:
    """Run the deployment rows, print them as the README's table and the goal's ratios; add them to results."""
    print(f"deployment: every runtime x precision on the same exported models and inputs, interleaved, {threads} "
          f"threads; CPU: {runtimes.describe_cpu()}")
    rows = deployment_rows(threads, repeats, args.warmup, args.quick)
    results["deployment"] = rows
    results["deployment_load_average"] = load_average()
    print(f"load average after the deployment rows: {load_average()}")
    print("README table (deployment):")
    print(deployment_table(rows))
    print(deployment_goal(rows))
    if write and args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
        print(f"results written to {args.json}")
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_int, help="CPU threads for every contender (default: all cores)")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--warmup", type=non_negative_int, default=1)
    parser.add_argument("--json", default="benchmark.json", help="where to write the results")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, skip the 800x1216 row (deployment: the classifier rows only)")
    parser.add_argument("--deploy-only", action="store_true",
                        help="only the deployment rows (every runtime x precision on exported models)")
    parser.add_argument("--memory-size", type=positive_int, default=512)
    parser.add_argument("--memory-worker", type=int, choices=[0, 1], help=argparse.SUPPRESS)
    parser.add_argument("--peers-default-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peers_default_worker:
        peers_out_of_the_box_worker(args.repeats, args.warmup)
        return {}
    threads = set_num_threads(args.threads)
    if args.memory_worker is not None:
        memory_worker(bool(args.memory_worker), args.memory_size)
        return {}
    repeats = 2 if args.quick else args.repeats
    device = paddle.get_device()
    machine = f"{runtimes.describe_cpu()}, {os.cpu_count()} cores, {device}"
    print(f"Swin-T backbone benchmark: {versions()}, {machine}, {threads} threads, {repeats} repeats (median); "
          f"load average {load_average()}")
    if args.deploy_only:
        return deploy_section({"machine": machine, "threads": threads, "cpu": cpu_features()}, threads, repeats,
                              args)
    tuning = cpu_tuning()
    print(f"process-wide CPU settings (swin_backbone/_cpu_tuning.py; apply to every contender in this process): "
          f"MKL_DEBUG_CPU_TYPE={tuning['mkl_cpu_type']}, malloc keeps large blocks: {tuning['malloc']}")
    contenders = build_contenders()
    for name, diff in check_agreement(contenders).items():
        print(f"  {name} output agrees with ours: max abs diff {diff:.2e}")
    ours_model = contenders["ours"].model
    rows = [("infer", shape) for shape in INFER_ROWS[:2 if args.quick else 3]] + [("train", TRAIN_ROW)]
    results = {"paddle": paddle.__version__, "machine": machine, "threads": threads, "cpu_tuning": tuning,
               "rows": []}
    peers = [n for n in contenders if n != "ours"]
    header = f"{'row':<22}{'ours s':>9}{'GFLOP/s':>9}" + "".join(f"{p + ' s':>13}{'x':>7}" for p in peers)
    print(header)
    for kind, shape in rows:
        make = inference_step(shape) if kind == "infer" else training_step(shape)
        times = time_interleaved(contenders, make, repeats, args.warmup, {name: threads for name in contenders})
        batch, height, width = shape
        work = ours_model.flops(height, width) * batch * (3 if kind == "train" else 1)
        gflops = work / times["ours"] / 1e9 if times["ours"] else 0.0
        label = f"{kind} {batch}x3x{height}x{width}"
        line = f"{label:<22}{fmt(times['ours']):>9}{gflops:>9.1f}"
        ratios = {}
        for peer in peers:
            ratio = times[peer] / times["ours"] if times[peer] and times["ours"] else None
            ratios[peer] = ratio
            line += f"{fmt(times[peer]):>13}{(f'{ratio:.2f}' if ratio else '-'):>7}"
        print(line, flush=True)
        results["rows"].append({"row": label, "seconds": times, "ratio_peer_over_ours": ratios,
                                "ours_gflops_per_s": gflops})
    # Out of the box: what a PaddleDetection/PaddleSeg user gets today (Paddle's default single thread and
    # none of swin_backbone's process-wide CPU settings, so in a fresh process) against ours as shipped.
    if not paddle.is_compiled_with_cuda():
        times = dict(peers_out_of_the_box(repeats, args.warmup), ours=results["rows"][0]["seconds"]["ours"])
        ratios = {p: times[p] / times["ours"] for p in peers if times.get(p) and times["ours"]}
        print("out of the box (peers in a fresh process: Paddle's default threads, no swin_backbone CPU tuning; "
              "ours as above), infer 8x3x224x224: " + ", ".join(f"{n} {fmt(t)} s" for n, t in times.items())
              + "; ratios " + ", ".join(f"{p} {r:.2f}" for p, r in ratios.items()))
        results["out_of_the_box"] = {"seconds": times, "ratio_peer_over_ours": ratios}
    # The deployment path: the same weights exported (tools/export.py) and run by Paddle Inference.
    if not paddle.is_compiled_with_cuda():
        seconds = exported_inference(ours_model, INFER_ROWS[0], repeats, threads)
        peer_ratios = {p: results["rows"][0]["seconds"][p] / seconds for p in peers if results["rows"][0]["seconds"][p]}
        print(f"ours exported, Paddle Inference with oneDNN, infer 8x3x224x224: {seconds:.3f} s; vs the peers' eager "
              + ", ".join(f"{p} {r:.2f}x" for p, r in peer_ratios.items()))
        results["exported_inference"] = {"seconds": seconds, "ratio_peer_eager_over_ours": peer_ratios}
    if not paddle.is_compiled_with_cuda():
        deploy_section(results, threads, repeats, args, write=False)
    memory = measure_memory(threads, args.memory_size)
    ratio = memory["with"]["step_mb"] / memory["without"]["step_mb"]
    slow = memory["with"]["seconds"] / memory["without"]["seconds"]
    rss = [memory[k]["step_rss_mb"] for k in ("without", "with")]
    rss_text = f"; process RSS growth {rss[0]:.0f} MB vs {rss[1]:.0f} MB (ratio {rss[1] / rss[0]:.2f})" if all(rss) else ""
    print(f"train step 2x3x{args.memory_size}x{args.memory_size} without / with use_checkpoint: allocator peak "
          f"{memory['without']['step_mb']:.0f} MB vs {memory['with']['step_mb']:.0f} MB (ratio {ratio:.2f})"
          f"{rss_text}; time {memory['without']['seconds']:.2f} s vs {memory['with']['seconds']:.2f} s "
          f"(ratio {slow:.2f})")
    results["memory"] = dict(memory, ratio=ratio, time_ratio=slow,
                             rss_ratio=rss[1] / rss[0] if all(rss) else None)
    throughput = cls_throughput(threads, 32, repeats)
    print(f"CIFAR recipe training throughput (swin_tiny_patch2_window4_32, batch 32): {throughput:.1f} img/s")
    results["cls_train_img_per_s"] = throughput
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
        print(f"results written to {args.json}")
    return results


if __name__ == "__main__":
    run_tool(main)
