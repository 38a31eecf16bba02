"""The "face_alignment" backend: 2D-FAN (Bulat & Tzimiropoulos, 2017) of the `face-alignment` package, 68 points.

The default backend: its weights carry no licence restriction (dlib's 68-point model does). face-alignment's own
detector finds the faces; the landmarks are regressed with that package's crop and decoding, batched over images.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np

from ..errors import FacialPriorWeightsError
from ..faces import parse_face_boxes
from .base import COMMON_DETECTOR_OPTIONS, DetectorBackend, require

__all__ = ["FaceAlignmentBackend"]


class FaceAlignmentBackend(DetectorBackend):
    """2D-FAN (Bulat & Tzimiropoulos, 2017) from `face-alignment`, with that package's own crop and decoding."""

    name = "face_alignment"
    defaults = {
        **COMMON_DETECTOR_OPTIONS,
        "device": "cpu",
        "dtype": "float32",
        "face_detector": "sfd",
        "face_detector_kwargs": {},
        "flip_input": True,
        "fan_path": None,
    }
    runtime = ("fan", "detector")

    def __init__(self, options, runtime):
        super().__init__(options, runtime)
        require("face_alignment", "face")
        import torch

        dtype = options["dtype"]
        self.torch_dtype = getattr(torch, dtype.replace("torch.", ""), None) if isinstance(dtype, str) else dtype
        if not isinstance(self.torch_dtype, torch.dtype):
            raise ValueError(f"dtype must name a torch dtype such as 'float32', got {dtype!r}")
        options["dtype"] = str(self.torch_dtype).replace("torch.", "")
        if self._fan is not None:
            self._fan = self._fan.to(options["device"], dtype=self.torch_dtype).eval()

    @staticmethod
    def weights_directory() -> str:
        """Where face-alignment caches its downloads (torch.hub's checkpoint folder)."""
        import torch

        return os.path.join(torch.hub.get_dir(), "checkpoints")

    def weight_urls(self) -> dict[str, str]:
        """Every file face-alignment would download for this configuration (FAN and the face detector)."""
        from face_alignment import api as fa_api

        urls = {}
        if self._fan is None and self.options["fan_path"] is None:
            urls["2DFAN-4"] = fa_api.models_urls["2DFAN-4"]
        if self._detector is None and "path_to_detector" not in self.options["face_detector_kwargs"]:
            package = self._detector_module().__name__
            for module_name, module in list(sys.modules.items()):
                if module_name.startswith(package) and isinstance(getattr(module, "models_urls", None), dict):
                    urls.update(module.models_urls)
        return urls

    def _weights_error(self, what: str, error: Exception) -> FacialPriorWeightsError:
        directory = self.weights_directory()
        urls = self.weight_urls()
        files = "\n".join(f"  {os.path.join(directory, os.path.basename(url))}   (from {url})" for url in urls.values())
        suggested = {}
        if "2DFAN-4" in urls:
            suggested["fan_path"] = os.path.join(directory, os.path.basename(urls["2DFAN-4"]))
        detector_files = [url for name, url in urls.items() if name != "2DFAN-4"]
        if detector_files:
            path = os.path.join(directory, os.path.basename(detector_files[0]))
            suggested["face_detector_kwargs"] = {"path_to_detector": path}
        return FacialPriorWeightsError(
            f"Could not obtain the face-alignment weights for {what}: {type(error).__name__}: {error}\n"
            f"face-alignment downloads its weights with torch.hub and looks for them in {directory} "
            "(set TORCH_HOME to move it). On an offline machine pre-seed that folder by copying these files "
            f"there from a machine with network access:\n{files}",
            suggested_options=suggested,
            python_hint="or build the models yourself: FacialPriorExtractor('face_alignment', fan=..., detector=...)",
        )

    @property
    def fan(self):
        if self._fan is None:
            import torch
            from face_alignment import api as fa_api
            from face_alignment import utils as fa_utils
            from face_alignment.models import FAN

            url = fa_api.models_urls["2DFAN-4"]
            path = self.options["fan_path"]
            if path is not None:
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"fan_path does not exist: {path}")
            else:
                try:
                    path = fa_utils.load_file_from_url(url)
                except Exception as error:  # URLError, HTTPError, timeouts, permission errors
                    raise self._weights_error("the 2D-FAN landmark network", error) from error
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                fan = FAN(4)
                fan.load_state_dict(state)
            except Exception as error:
                raise FacialPriorWeightsError(f"Cannot load 2D-FAN weights from {path}: {error} "
                                              "(delete the file to download it again)") from error
            self._fan = fan.to(self.options["device"], dtype=self.torch_dtype).eval()
        return self._fan

    def _detector_module(self):
        name = self.options["face_detector"]
        try:
            return importlib.import_module(f"face_alignment.detection.{name}")
        except ModuleNotFoundError as error:
            raise ValueError(f"face-alignment has no face detector {name!r} "
                             "(choose e.g. 'sfd', 'blazeface', 'dlib')") from error

    @property
    def detector(self):
        if self._detector is None:
            module = self._detector_module()
            try:
                self._detector = module.FaceDetector(device=self.options["device"], verbose=False,
                                                     **self.options["face_detector_kwargs"])
            except (OSError, RuntimeError) as error:  # URLError is an OSError
                raise self._weights_error(f"the {self.options['face_detector']!r} face detector", error) from error
        return self._detector

    @property
    def reference_scale(self) -> float:
        """face-alignment sizes its crop from the box with a detector-specific reference scale."""
        from face_alignment.utils import REFERENCE_SCALE

        if self._detector is not None:
            return float(getattr(self._detector, "reference_scale", REFERENCE_SCALE))
        prop = getattr(self._detector_module().FaceDetector, "reference_scale", None)
        try:
            return float(prop.fget(None)) if isinstance(prop, property) else float(REFERENCE_SCALE)
        except Exception:
            return float(REFERENCE_SCALE)

    def detect_faces(self, image):
        return parse_face_boxes(self.detector.detect_from_image(image.copy()), "face-alignment detector output")

    def predict_landmarks(self, images, boxes):
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, crop, flip, get_preds_fromhm

        # Same geometry as FaceAlignment.get_landmarks_from_image, batched over images.
        reference_scale = self.reference_scale
        centers, scales, crops = [], [], []
        for image, d in zip(images, boxes):
            center = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
            center[1] = center[1] - (d[3] - d[1]) * CENTER_Y_OFFSET
            scale = (d[2] - d[0] + d[3] - d[1]) / reference_scale
            centers.append(center)
            scales.append(scale)
            crops.append(crop(image, center, scale).transpose((2, 0, 1)).astype(np.float32) / 255.0)
        fan = self.fan
        with torch.no_grad():
            batch = torch.from_numpy(np.stack(crops)).to(self.options["device"], dtype=self.torch_dtype)
            heatmaps = fan(batch)
            heatmaps = (heatmaps[-1] if isinstance(heatmaps, (list, tuple)) else heatmaps).detach()
            if self.options["flip_input"]:
                flipped = fan(flip(batch))
                flipped = flipped[-1] if isinstance(flipped, (list, tuple)) else flipped
                heatmaps += flip(flipped.detach(), is_label=True)
            heatmaps = heatmaps.to(device="cpu", dtype=torch.float32).numpy()
        landmarks = []
        for i, (center, scale) in enumerate(zip(centers, scales)):
            _, points, _ = get_preds_fromhm(heatmaps[i : i + 1], center, scale)
            landmarks.append(points.reshape(-1, 2))
        return landmarks
