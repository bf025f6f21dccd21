from setuptools import find_packages, setup

# Paddle comes from an extra: the CPU and GPU wheels are different packages and cannot both be required.
# The versions are the measured stack (Paddle 3.x breaks paddledet 2.6's R-CNN and paddleseg 2.8's losses).
PADDLE = "2.6.2"
extras = {
    "cpu": [f"paddlepaddle=={PADDLE}"],
    "gpu": [f"paddlepaddle-gpu=={PADDLE}"],
    # pycocotools 2.0.11 segfaults when imported after paddle 2.6.2; 2.0.8 does not.
    # paddledet 2.6 draws labels with ImageDraw.textsize, which Pillow 10 removed.
    "det": ["paddledet==2.6.0", "pycocotools==2.0.8", "Pillow<10", "opencv-python", "pyyaml"],
    "seg": ["paddleseg==2.8.0", "opencv-python", "pyyaml"],
    "onnx": ["paddle2onnx==1.3.1", "onnxruntime"],
    "test": ["pytest"],
}

setup(
    name="swin-paddle",
    version="0.1.0",
    description="Swin Transformer backbone and classifier for Paddle, PaddleDetection and PaddleSeg",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=find_packages(include=["swin_backbone", "swin_backbone.*"]),
    install_requires=["numpy"],
    extras_require=extras,
)
