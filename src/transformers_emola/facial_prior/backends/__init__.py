"""The facial-prior backends, one module each, by the name `FacialPriorExtractor` takes.

Importing a backend module is cheap: each imports its optional package (face-alignment, dlib, onnxruntime + OpenCV)
only when an extractor is built with it, and says which extra installs it when it is missing.
"""

from .base import Backend
from .dlib import DlibBackend
from .face_alignment import FaceAlignmentBackend
from .insightface import InsightFace2d106Backend
from .precomputed import PrecomputedBackend

#: backend name -> class
BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls for cls in (FaceAlignmentBackend, DlibBackend, InsightFace2d106Backend, PrecomputedBackend)
}

__all__ = ["BACKENDS", "Backend"]
