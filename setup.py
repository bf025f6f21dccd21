from setuptools import find_packages, setup

# Paddle comes from an extra: the CPU and GPU wheels are different packages and cannot both be required.
# Support matrix (measured):
#   Paddle 2.6.2: everything -- the package, cls_train, export/infer, ONNX, and the PaddleDetection 2.6 and
#                 PaddleSeg 2.8 plug-ins (extras cpu|gpu, det, seg, onnx).
#   Paddle 3.3.1: the package, cls_train, export (PIR) and infer, ONNX (extras cpu-paddle3|gpu-paddle3,
#                 onnx-paddle3); paddledet 2.6 and paddleseg 2.8 themselves break on Paddle 3.x (R-CNN, losses).
PADDLE = "2.6.2"
PADDLE3 = "3.3.1"
extras = {
    "cpu": [f"paddlepaddle=={PADDLE}"],
    "gpu": [f"paddlepaddle-gpu=={PADDLE}"],
    "cpu-paddle3": [f"paddlepaddle=={PADDLE3}"],
    "gpu-paddle3": [f"paddlepaddle-gpu=={PADDLE3}"],
    # pycocotools 2.0.11 segfaults when imported after paddle 2.6.2; 2.0.8 does not.
    # paddledet 2.6 draws labels with ImageDraw.textsize, which Pillow 10 removed.
    "det": ["paddledet==2.6.0", "pycocotools==2.0.8", "Pillow<10", "opencv-python", "pyyaml"],
    "seg": ["paddleseg==2.8.0", "opencv-python", "pyyaml"],
    # paddle2onnx 1.3.1 reads Paddle 2.6's .pdmodel; 2.1 reads Paddle 3.x's PIR model.json
    "onnx": ["paddle2onnx==1.3.1", "onnxruntime"],
    "onnx-paddle3": ["paddle2onnx==2.1.0", "onnxruntime"],
    # OpenVINO runs the exports (.pdmodel, .onnx) on CPU, bf16 where the CPU has AMX or AVX512-BF16;
    # optional: the package never imports it (tools/runtimes.py does, when asked for it).
    "openvino": ["openvino==2026.4.1"],
    "test": ["pytest", "opencv-python", "Pillow"],
}
# Paddle 2.6.2's fleet (paddle.distributed.fleet, which PaddleSeg's training calls on several processes) reads
# FieldDescriptor.label, which protobuf 7 removed: AttributeError before the first step. Measured: protobuf
# 6.33.6 works, 7.34+ fails; Paddle 3.3.1's fleet reads either (is_repeated), so its extras stay unpinned.
for _paddle2 in ("cpu", "gpu"):
    extras[_paddle2].append("protobuf>=3.20.2,<7")

setup(
    name="swin-paddle",
    version="0.1.0",
    description="Swin Transformer backbone and classifier for Paddle, PaddleDetection and PaddleSeg",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=find_packages(include=["swin_backbone", "swin_backbone.*"]),
    package_data={"swin_backbone": ["data/*.txt"]},  # the authors' ImageNet-22K -> 1K class map
    install_requires=["numpy"],
    extras_require=extras,
)
