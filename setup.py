"""transformers-emola: EmoLA (ECCV 2024) as a Hugging Face transformers model family."""

from setuptools import find_packages, setup

CORE = [
    "torch>=2.1,<2.14",
    "transformers>=5.0,<6",
    "accelerate>=1.0",
    "safetensors>=0.4",
    "numpy>=1.24",
    "pillow>=9",
    "tqdm>=4.60",
]
EXTRAS = {
    # Landmark backends. face-alignment is the default; dlib's 68-point model (iBUG 300-W) is non-commercial.
    "face": ["face-alignment>=1.4", "scikit-image>=0.21"],
    "dlib": ["dlib-bin>=19.24", "face_recognition_models>=0.3"],
    "insightface": ["onnxruntime>=1.16", "opencv-python>=4.8"],
    "train": ["peft>=0.13", "trl>=1.0", "datasets>=3.0", "pyyaml>=6"],
    "eval": ["evaluate>=0.4", "rouge>=1.0.1", "rouge-score>=0.1.2", "datasets>=3.0", "matplotlib>=3.7"],
    # `emola app` (web page + /analyze API); tested with gradio 6.31 / gradio_client 2.7 (the page uses Gradio 6 APIs).
    "app": ["gradio>=6.31,<7", "gradio_client>=2.7,<3"],
}
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})
EXTRAS["dev"] = EXTRAS["all"] + ["pytest>=7", "onnx>=1.15", "scikit-image>=0.21"]

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
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["emola=emola_cli:main"]},
)
