"""transformers-emola: EmoLA (Li et al., ECCV 2024) as a Hugging Face transformers model family.

Importing the package registers EmoLA with the Auto* classes and pipelines, so `AutoModelForImageTextToText`,
`AutoProcessor` and `pipeline("image-text-to-text")` load EmoLA checkpoints without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_emola import EmolaConfig
from .faba import AU_QUESTION, EMOTION_QUESTION, FACIAL_PRIOR_DIMS
from .facial_prior import normalize_landmarks
from .modeling_emola import EmolaForConditionalGeneration, EmolaModel, EmolaPreTrainedModel
from .pipeline_facial_affect import FacialAffectAnalysisPipeline
from .pipeline_facial_affect import register_pipeline as _register_facial_affect_pipeline
from .processing_emola import EmolaProcessor

__version__ = "0.1.0"

AutoConfig.register("emola", EmolaConfig, exist_ok=True)
AutoModel.register(EmolaConfig, EmolaModel, exist_ok=True)
AutoModelForImageTextToText.register(EmolaConfig, EmolaForConditionalGeneration, exist_ok=True)
AutoProcessor.register(EmolaConfig, EmolaProcessor, exist_ok=True)
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
    "EmolaModel",
    "EmolaPreTrainedModel",
    "EmolaProcessor",
    "FacialAffectAnalysisPipeline",
    "FaceLandmarks",
    "FaceNotFoundError",
    "FacialPriorExtractor",
    "build_tiny_emola",
    "compute_rege",
    "load_image",
    "load_rege",
    "normalize_landmarks",
]
