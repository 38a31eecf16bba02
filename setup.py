"""transformers-emola: EmoLA (ECCV 2024) as a Hugging Face transformers model family."""

from setuptools import find_packages, setup

# Every range below is one the test suite has passed at both ends: CI installs the newest release each range allows
# (what a fresh `pip install` resolves) and the floors in .ci/lowest-constraints.txt, and runs the whole suite on
# both. An upper bound is the next minor release not yet tested. The tested versions: docs/compatibility.md.
CORE = [
    "torch>=2.13,<2.14",  # only 2.13 is tested (transformers 5.23 itself needs torch>=2.6)
    "transformers>=5.23,<5.25",  # 5.22 lacks activation_checkpointing_enable and the processor's image-count check
    "huggingface_hub>=1.31,<2.5",
    "tokenizers>=0.23.1,<0.24",
    "accelerate>=1.10.1,<1.16",
    "safetensors>=0.8,<0.9",
    "numpy>=1.26,<2.5",
    "pillow>=10.3,<12.4",  # 10.3 reads 16-bit PNGs as mode I;16
    "tqdm>=4.66.3,<5",
]
EXTRAS = {
    # Landmark backends. face-alignment is the default; dlib's 68-point model (iBUG 300-W) is non-commercial.
    "face": ["face-alignment>=1.5,<1.6", "scikit-image>=0.26,<0.27"],
    "dlib": ["dlib-bin>=20.0.1,<20.1", "face_recognition_models>=0.3,<0.4"],
    "insightface": ["onnxruntime>=1.32.0,<1.33", "opencv-python>=4.11.0.86,<5.1"],
    # trl 1.16 is the first release whose SFTTrainer takes our vision datasets with assistant-only loss on CPU.
    "train": ["peft>=0.14,<0.22", "trl>=1.16,<1.17", "datasets>=4.7,<5.3", "pyyaml>=6.0.1,<7"],
    "eval": ["evaluate>=0.4.0,<0.5", "rouge>=1.0.1,<1.1", "rouge-score>=0.1.2,<0.2", "datasets>=4.7,<5.3",
             "matplotlib>=3.11.2,<3.12"],
    # `emola app` (web page + /analyze API); the page uses Gradio 6 APIs.
    "app": ["gradio>=6.31.0,<6.32", "gradio_client>=2.7.2,<2.8"],
}
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})
EXTRAS["dev"] = EXTRAS["all"] + ["pytest>=9.2.0,<10", "onnx>=1.23.2,<1.24"]

setup(
    name="transformers-emola",
    version="0.1.0",
    description="EmoLA facial affective behaviour analysis as a first-class Hugging Face transformers model",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    py_modules=["emola_cli"],  # the console script: parses the command line before the package imports torch
    package_data={"transformers_emola": ["metrics/rege/README.md", "model_card_template.md"]},
    python_requires=">=3.11",  # the only Python the suite runs on
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["emola=emola_cli:main"]},
)
