from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="starvla-twinbrain",
    version="0.1.0",
    description="TwinBrainVLA (frozen generalist + trainable specialist VLM with AsyMoT attention) for starVLA",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["starvla_twinbrain", "starvla_twinbrain.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=4.57,<6",
        "tokenizers",
        "safetensors",
        "pillow",
        "numpy",
        "packaging",
        "omegaconf",
        "accelerate",
        "diffusers",
        "tensorboard",
        "matplotlib",
        "tqdm",
        "websockets>=13",
        "msgpack",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6"],
        # LeRobot v3.0 datasets for the embedded trainer; lerobot 0.6 needs Python >= 3.12 and transformers 5.x.
        "lerobot": ['lerobot[dataset]==0.6.1; python_version >= "3.12"'],
    },
    entry_points={"console_scripts": ["starvla=starvla_twinbrain.cli:main"]},
)
