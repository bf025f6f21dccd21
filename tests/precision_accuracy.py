"""What bf16 costs in accuracy on the trained smoke segmenter and detector: the README's figures.

    python tests/precision_accuracy.py [--work DIR]      # about a minute on 2 quiet cores; prints the README rows

Trains the smoke UperNet (tools/seg_train.py, 30 iterations) and the smoke Mask R-CNN (tools/det_train.py,
12 epochs) on the synthetic ADE20K- and COCO-format sets the tests use, exports each (tools/export.py), and
evaluates every runtime x precision of tools/runtimes.py that runs them on the validation images: the
segmenter's mIoU over the classes present (labels resized to the network input, nearest), the detector's
COCO box and mask AP (PaddleDetection's own COCOMetric). Not a test (it trains two models); the classifier's
bound is tested in test_openvino.py.
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOLS = os.path.join(ROOT, "tools")
sys.path[:0] = [ROOT, TOOLS, HERE]

import swin_backbone  # noqa: E402,F401  (before paddle)

import numpy as np  # noqa: E402

import runtimes  # noqa: E402
from synthetic_data import write_ade20k, write_coco  # noqa: E402

SEG_SMOKE = os.path.join(ROOT, "seg_configs", "upernet_swin_smoke.yml")
DET_SMOKE = os.path.join(ROOT, "det_configs", "mask_rcnn_swin_smoke.yml")
PATHS = [("paddle", "fp32", None), ("paddle", "bf16", None), ("onnxruntime", "fp32", None),
         ("openvino", "fp32", "pdmodel"), ("openvino", "bf16", "pdmodel")]


def run(*command: str) -> None:
    proc = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command[:2])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def runners(folder: str) -> dict:
    found = {}
    for runtime, precision, source in PATHS:
        name = f"{runtime} {precision}"
        try:
            found[name] = runtimes.create(runtime, folder, precision, openvino_from=source)
        except Exception as error:  # e.g. OpenVINO on the detector, bf16 on a CPU without it
            print(f"  {name}: not run: {str(error).splitlines()[0][:200]}")
    return found


def segmenter(work: str) -> None:
    import swin_backbone.paddleseg  # noqa: F401
    from paddleseg.cvlibs import Config, SegBuilder

    root = os.path.join(work, "ade", "ADEChallengeData2016")
    if not os.path.isdir(root):
        write_ade20k(os.path.join(work, "ade"))
    opts = ["--opts", f"train_dataset.dataset_root={root}", f"val_dataset.dataset_root={root}"]
    save = os.path.join(work, "seg_run")
    weights = os.path.join(save, "iter_30", "model.pdparams")
    if not os.path.isfile(weights):  # a --work folder keeps the trained model for another run
        run(os.path.join(TOOLS, "seg_train.py"), "--config", SEG_SMOKE, "--save_dir", save, "--seed", "0", *opts)
    out = os.path.join(work, "seg_export")
    run(os.path.join(TOOLS, "export.py"), "--task", "seg", "--config", SEG_SMOKE, "--weights", weights,
        "--output", out, "--onnx")
    dataset = SegBuilder(Config(SEG_SMOKE, opts=[f"val_dataset.dataset_root={root}"])).val_dataset
    samples = [dataset[i] for i in range(len(dataset))]
    print(f"segmenter: {len(samples)} validation images")
    for name, runner in runners(out).items():
        intersect, union = np.zeros(4), np.zeros(4)
        for sample in samples:
            image, label = sample["img"], sample["label"]
            predicted = runner(image[None].astype("float32"))[0][0]
            label = label.reshape(label.shape[-2:])
            if label.shape != predicted.shape:
                import cv2

                label = cv2.resize(label.astype("uint8"), predicted.shape[::-1], interpolation=cv2.INTER_NEAREST)
            valid = label != 255
            for c in range(1, 4):
                p, t = (predicted == c) & valid, (label == c) & valid
                intersect[c] += (p & t).sum()
                union[c] += (p | t).sum()
        print(f"  segmenter {name}: mIoU over classes 1-3 {100 * np.mean(intersect[1:] / np.maximum(union[1:], 1)):.2f}")


def detector(work: str) -> None:
    import det_common  # noqa: F401  (sets the flags PaddleDetection needs)
    from ppdet.core.workspace import create
    from ppdet.data.source.category import get_categories
    from ppdet.metrics import COCOMetric

    coco = os.path.join(work, "coco")
    if not os.path.isdir(os.path.join(coco, "annotations")):
        write_coco(coco)
    save = os.path.join(work, "det_run")
    options = ["-c", DET_SMOKE, "-o", f"TrainDataset.dataset_dir={coco}", f"EvalDataset.dataset_dir={coco}",
               f"TestDataset.dataset_dir={coco}", f"save_dir={save}"]
    weights = os.path.join(save, "mask_rcnn_swin_smoke", "model_final.pdparams")
    if not os.path.isfile(weights):
        run(os.path.join(TOOLS, "det_train.py"), "--seed", "0", *options)
    out = os.path.join(work, "det_export")
    run(os.path.join(TOOLS, "export.py"), "--task", "det", "--config", DET_SMOKE, "--weights", weights,
        "--output", out)
    cfg = det_common.load_config(DET_SMOKE, {"EvalDataset": {"dataset_dir": coco}, "weights": weights})
    dataset = cfg["EvalDataset"]
    batches = list(create("EvalReader")(dataset, 0))
    anno = dataset.get_anno()
    clsid2catid, _ = get_categories("COCO", anno)
    for name, runner in runners(out).items():
        metric = COCOMetric(anno_file=anno, clsid2catid=clsid2catid, output_eval=work, IouType="bbox")
        for batch in batches:
            extra = {k: batch[k].numpy() for k in ("im_shape", "scale_factor")}
            bbox, bbox_num, mask = runner(batch["image"].numpy(), extra)
            metric.update(batch, {"bbox": bbox, "bbox_num": bbox_num, "mask": mask})
        metric.accumulate()
        result = metric.get_results()
        print(f"  detector {name}: box AP {100 * result['bbox'][0]:.2f}, mask AP {100 * result['mask'][0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="folder for the data, runs and exports (default: a temporary one)")
    parser.add_argument("--only", choices=["seg", "det"])
    args = parser.parse_args()
    print(f"CPU: {runtimes.describe_cpu()}")
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or temporary
        os.makedirs(work, exist_ok=True)
        if args.only != "det":
            segmenter(work)
        if args.only != "seg":
            detector(work)


if __name__ == "__main__":
    main()
