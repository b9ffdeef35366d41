from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

# Installed means enabled: this file in site-packages runs starvla_twinbrain_autoload.install() at interpreter start,
# which registers TwinBrain with starVLA when starVLA loads (see that module). Both install modes must ship it.
AUTOLOAD_PTH = "starvla_twinbrain_autoload.pth"
AUTOLOAD_LINE = "import starvla_twinbrain_autoload; starvla_twinbrain_autoload.install()\n"


class BuildPyWithAutoload(build_py):
    """``pip install .``: the .pth goes at the root of the wheel, which is site-packages."""

    def run(self):
        super().run()
        if not self.editable_mode:
            Path(self.build_lib, AUTOLOAD_PTH).write_text(AUTOLOAD_LINE)

    def get_outputs(self, *args, **kwargs):
        outputs = super().get_outputs(*args, **kwargs)
        return outputs if self.editable_mode else [*outputs, str(Path(self.build_lib, AUTOLOAD_PTH))]


class EditableWheelWithAutoload(editable_wheel):
    """``pip install -e .``: setuptools' editable wheel only points at the source tree, so add the .pth to it."""

    def run(self):
        super().run()
        wheels = list(Path(self.dist_dir).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one editable wheel in {self.dist_dir}, found {[w.name for w in wheels]}")
        _add_to_wheel(wheels[0], AUTOLOAD_PTH, AUTOLOAD_LINE)


def _add_to_wheel(wheel: Path, name: str, text: str) -> None:
    """Rewrite ``wheel`` with one more file at its root (RECORD recomputed)."""
    import tempfile

    from wheel.wheelfile import WheelFile  # setuptools' own copy, the one its editable_wheel writes with

    with tempfile.TemporaryDirectory() as tmp:
        rewritten = Path(tmp, wheel.name)
        with WheelFile(wheel) as source, WheelFile(rewritten, "w") as target:
            for info in source.infolist():
                if info.filename != source.record_path:
                    target.writestr(info, source.read(info))
            target.writestr(name, text)
        rewritten.replace(wheel)


setup(
    name="starvla-twinbrain",
    version="0.1.0",
    description="TwinBrainVLA (frozen generalist + trainable specialist VLM with AsyMoT attention) for starVLA",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["starvla_twinbrain", "starvla_twinbrain.*"]),
    py_modules=["starvla_twinbrain_autoload"],
    cmdclass={"build_py": BuildPyWithAutoload, "editable_wheel": EditableWheelWithAutoload},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=4.57,<6",
        "tokenizers",
        "safetensors",
        "pillow",
        "numpy",
        "packaging",
        "omegaconf>=2.4",  # Literal fields in structured configs (the typed YAML tree)
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
        # Low-memory training (framework.twinbrain.right_lora / left_precision: int8); optional because a full
        # fine-tuning run needs neither. Lower bounds: the versions tested (torch 2.11 / 2.13 / 2.14).
        "lowmem": ["peft>=0.21.2", "torchao>=0.18.0"],
    },
    entry_points={"console_scripts": ["starvla=starvla_twinbrain.cli:main"]},
)
