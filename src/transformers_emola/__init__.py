"""transformers-emola: EmoLA (Li et al., ECCV 2024) as a Hugging Face transformers model family.

Importing the package registers EmoLA with the Auto* classes and pipelines, so `AutoModelForImageTextToText`,
`AutoProcessor` and `pipeline("image-text-to-text")` load EmoLA checkpoints without `trust_remote_code`, on every
supported base family (`add_facial_prior` / `add_facial_prior_token` turn a base model / processor into EmoLA).
"""

from .configuration_emola import EmolaConfig
from .faba import AU_QUESTION, EMOTION_QUESTION, FACIAL_PRIOR_DIMS
from .facial_prior import normalize_landmarks
from .families import add_facial_prior, add_facial_prior_token, facial_prior_family, register_families
from .modeling_emola import EmolaForConditionalGeneration, EmolaModel, EmolaPreTrainedModel
from .modeling_emola_gemma3 import (
    EmolaGemma3Config,
    EmolaGemma3ForConditionalGeneration,
    EmolaGemma3Model,
    EmolaGemma3Processor,
)
from .modeling_emola_idefics3 import (
    EmolaIdefics3Config,
    EmolaIdefics3ForConditionalGeneration,
    EmolaIdefics3Model,
    EmolaIdefics3Processor,
)
from .modeling_emola_qwen2_5_vl import (
    EmolaQwen2_5_VLConfig,
    EmolaQwen2_5_VLForConditionalGeneration,
    EmolaQwen2_5_VLModel,
    EmolaQwen2_5_VLProcessor,
)
from .pipeline_facial_affect import FacialAffectAnalysisPipeline
from .pipeline_facial_affect import register_pipeline as _register_facial_affect_pipeline
from .processing_emola import EmolaProcessor

__version__ = "0.1.0"

register_families()  # EmoLA on LLaVA, Qwen2.5-VL, Idefics3/SmolVLM and Gemma 3, for the Auto classes
_register_facial_affect_pipeline()  # pipeline("facial-affect-analysis")


def __getattr__(name):
    # Optional parts load on first use, so `import transformers_emola` stays light.
    lazy = {
        "FacialPriorExtractor": "facial_prior",
        "FaceLandmarks": "facial_prior",
        "FaceNotFoundError": "facial_prior",
        "load_image": "facial_prior",
        "load_rege": "metrics",
        "compute_rege": "metrics",
        "build_tiny_emola": "tiny",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f".{lazy[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AU_QUESTION",
    "EMOTION_QUESTION",
    "FACIAL_PRIOR_DIMS",
    "EmolaConfig",
    "EmolaForConditionalGeneration",
    "EmolaGemma3Config",
    "EmolaGemma3ForConditionalGeneration",
    "EmolaGemma3Model",
    "EmolaGemma3Processor",
    "EmolaIdefics3Config",
    "EmolaIdefics3ForConditionalGeneration",
    "EmolaIdefics3Model",
    "EmolaIdefics3Processor",
    "EmolaModel",
    "EmolaPreTrainedModel",
    "EmolaProcessor",
    "EmolaQwen2_5_VLConfig",
    "EmolaQwen2_5_VLForConditionalGeneration",
    "EmolaQwen2_5_VLModel",
    "EmolaQwen2_5_VLProcessor",
    "FacialAffectAnalysisPipeline",
    "FaceLandmarks",
    "FaceNotFoundError",
    "FacialPriorExtractor",
    "add_facial_prior",
    "add_facial_prior_token",
    "build_tiny_emola",
    "compute_rege",
    "facial_prior_family",
    "load_image",
    "load_rege",
    "normalize_landmarks",
]
