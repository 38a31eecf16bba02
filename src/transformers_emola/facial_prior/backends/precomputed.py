"""The "precomputed" backend: priors read from `.npy` files made beforehand (any length).

FABA-Instruct ships them for its images; `emola extract-priors` writes them for any images.
"""

from __future__ import annotations

import os

from PIL import Image

from ..faces import FaceLandmarks
from ..priors import load_prior, prior_path_for_image
from .base import Backend

__all__ = ["PrecomputedBackend"]


class PrecomputedBackend(Backend):
    """Priors read from `.npy` files (FABA-Instruct ships them; `emola extract-priors` writes them).

    Inputs are `.npy` paths (relative ones are resolved against `root`), or image paths when `root` and
    `image_root` are set: `image_root/<rel>.jpg` -> `root/landmarks/<rel>.npy` (see `prior_path_for_image`)."""

    name = "precomputed"
    defaults = {"root": None, "image_root": None, "dim": None, "batch_size": 64}

    @property
    def dim(self):
        return self.options["dim"]

    def npy_path(self, image, source: str) -> str:
        if isinstance(image, Image.Image) and getattr(image, "filename", ""):
            image = image.filename
        if not isinstance(image, (str, os.PathLike)):
            raise ValueError(f"The precomputed backend reads .npy files: {source} is not a path "
                             "(pass facial_priors explicitly, or use a landmark backend)")
        path, root = os.fspath(image), self.options["root"]
        if path.endswith(".npy"):
            return os.path.join(root, path) if root and not os.path.isabs(path) else path
        image_root = self.options["image_root"]
        if not root or not image_root:
            raise ValueError(f"The precomputed backend got the image {path}: pass its .npy file, or set root= and "
                             "image_root= so that image_root/<rel> maps to root/landmarks/<rel>.npy")
        relative = os.path.relpath(path, image_root) if os.path.isabs(path) else path
        if relative.startswith(".."):
            raise ValueError(f"{path} is not inside image_root {image_root}")
        return os.path.join(root, prior_path_for_image(relative))

    def process(self, images, sources, face_boxes):
        if any(box is not None for box in face_boxes):
            raise ValueError("The precomputed backend does not use face_boxes")
        results = []
        dim = self.options["dim"]
        for image, source in zip(images, sources):
            path = self.npy_path(image, source)
            # Without a given dim, the first file of a batch sets the length the others must have.
            expected = dim if dim is not None else (results[0].prior.shape[0] if results else None)
            try:
                prior = load_prior(path, dim=expected)
            except FileNotFoundError as error:
                raise FileNotFoundError(f"{error} (the precomputed prior of {source})") from None
            results.append(FaceLandmarks(prior, None, None, None, source))
        return results
