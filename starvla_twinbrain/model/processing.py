"""Loading a Qwen-VL checkpoint's processor, and telling which family a checkpoint is, without network."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import transformers
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, Qwen2_5_VLProcessor, Qwen3VLProcessor

from .config import OptionError

logger = logging.getLogger(__name__)

FAMILY_OF_MODEL_TYPE = {"qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}


def family_of(path_or_name: str) -> str:
    """``"qwen2_5_vl"`` or ``"qwen3_vl"`` from the checkpoint's ``config.json``; a clear error otherwise.

    A local folder is read directly. Anything else is resolved through the Hugging Face cache only
    (``local_files_only``): this never downloads.
    """
    path = Path(path_or_name).expanduser()
    config_file = path / "config.json"
    if not config_file.is_file():
        try:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(str(path_or_name), "config.json", local_files_only=True))
        except Exception:
            raise OptionError(
                "base_vlm", f"={path_or_name!r}: no Qwen-VL checkpoint there (no config.json in that folder, and "
                f"not in the local Hugging Face cache). Give the folder of a Qwen2.5-VL or Qwen3-VL checkpoint."
            ) from None
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in FAMILY_OF_MODEL_TYPE:
        raise OptionError(
            "base_vlm", f"={path_or_name!r} is a {model_type!r} model: expected a Qwen2.5-VL or Qwen3-VL checkpoint "
            f"(model_type 'qwen2_5_vl' or 'qwen3_vl')"
        )
    return FAMILY_OF_MODEL_TYPE[model_type]


def image_processor_class():
    """The Qwen2-VL image processor that needs no torchvision (5.x: the PIL backend; 4.57: the slow class)."""
    return getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor


def _image_only(base: type) -> type:
    """``base`` (a Qwen-VL processor) without the video processor, which cannot be built without torchvision."""

    class ImageOnlyProcessor(base):
        attributes = ["image_processor", "tokenizer"]  # transformers 4.57 reads this; 5.x reads __init__

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)

    ImageOnlyProcessor.__name__ = ImageOnlyProcessor.__qualname__ = f"ImageOnly{base.__name__}"
    return ImageOnlyProcessor


IMAGE_ONLY_PROCESSORS = {
    "qwen2_5_vl": _image_only(Qwen2_5_VLProcessor),
    "qwen3_vl": _image_only(Qwen3VLProcessor),
}


def load_processor(path_or_name: str):
    """The checkpoint's own processor (tokenizer, image processor, chat template).

    ``AutoProcessor`` first; where it cannot build the video processor (no torchvision), the same processor class
    restricted to images. Images and text are processed exactly as by the stock processor.
    """
    family = family_of(path_or_name)
    try:
        return AutoProcessor.from_pretrained(path_or_name)
    except (ImportError, ValueError, TypeError, OSError, AttributeError) as err:
        logger.info("AutoProcessor unavailable for %s (%s); using the image-only processor", path_or_name, err)
    tokenizer = AutoTokenizer.from_pretrained(path_or_name)
    image_processor = image_processor_class().from_pretrained(path_or_name)
    chat_template = tokenizer.chat_template
    template_file = Path(path_or_name) / "chat_template.jinja"
    if template_file.is_file():
        chat_template = template_file.read_text()
    if chat_template is None:
        raise OptionError("base_vlm", f"={path_or_name!r}: the checkpoint has no chat template")
    return IMAGE_ONLY_PROCESSORS[family](image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
