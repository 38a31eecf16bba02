"""Batch extraction of facial priors to `.npy` files: the library behind `emola extract-priors`.

Two layouts: one `<name>.npy` per image for image files and folders (`extract_priors`), and FABA-Instruct's layout
for annotated images (`extract_priors_for_annotations`). Both run on `jobs.run_job`: resumable (an image whose
files exist is skipped unless `overwrite`), atomic (no half-written file after a kill), failure-tolerant (a bad image
is recorded in `failures.json`, the others are written) and shardable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..jobs import Launch, run_job
from .errors import FaceNotFoundError, FacialPriorWeightsError
from .extractor import FacialPriorExtractor
from .images import find_images, output_names
from .priors import prior_path_for_image, save_prior

__all__ = ["PriorExtractionReport", "extract_priors", "extract_priors_for_annotations", "read_annotation_rows"]

FAILURES_FILE = "failures.json"


@dataclass
class PriorExtractionReport:
    """What a batch extraction did: files written, files already there, the failed images
    (`{"image", "outputs", "status", "error"}`, status "no_face" or "error"), and how many images each process of
    the launch was given."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    failures_path: Path | None = None
    samples_per_process: list[int] = field(default_factory=list)

    @property
    def num_processes(self) -> int:
        return len(self.samples_per_process)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class _Image:
    key: str  # how the image is named in failures.json
    path: Path  # the file to read
    outputs: list[str]  # .npy paths relative to the output folder


def read_annotation_rows(path: str | os.PathLike) -> list[dict]:
    """FABA-Instruct annotation rows from a `.json` list or a `.jsonl` file; each needs a relative `image`."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            if path.endswith(".jsonl"):
                rows = [json.loads(line) for line in handle if line.strip()]
            else:
                rows = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read annotations {path}: {error}") from error
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of annotation rows, got {type(rows).__name__}")
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not row["image"]:
            raise ValueError(f"{path}: row {index} has no 'image' path")
        if row.get("landmark") is not None and not isinstance(row["landmark"], str):
            raise ValueError(f"{path}: row {index} has a non-string 'landmark'")
    return rows


def extract_priors(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    extractor: FacialPriorExtractor,
    *,
    overwrite: bool = False,
    progress: bool = True,
    launch: Launch = Launch(),
) -> PriorExtractionReport | None:
    """Write one prior `.npy` per image of `paths` (files, or folders searched recursively) under `out_dir`.

    Each image's file keeps its path below the images' common folder (`photos/sub/a.jpg` -> `out_dir/sub/a.npy`,
    see `images.output_names`); failures are listed in `out_dir/failures.json`. With `launch=Launch.detect()` in every
    process of a `torchrun` / `accelerate launch`, each process extracts every n-th image and the main process
    returns the report of the whole job (the others return None).
    """
    images = find_images(paths)
    names = output_names(images, ".npy")
    targets = [_Image(str(image), image, [names[image].as_posix()]) for image in images]
    return _write_priors(targets, Path(out_dir), extractor, overwrite=overwrite, progress=progress, launch=launch)


def extract_priors_for_annotations(
    rows: Sequence[dict],
    image_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    extractor: FacialPriorExtractor,
    *,
    overwrite: bool = False,
    progress: bool = True,
    launch: Launch = Launch(),
) -> PriorExtractionReport | None:
    """Write one prior `.npy` per annotated image, in the FABA-Instruct layout.

    Each row's prior goes to `out_dir/<row["landmark"]>` when the row has one, else to
    `out_dir/landmarks/<image path>.npy`; an image listed by several rows is computed once. Failures are listed in
    `out_dir/failures.json`. `launch`: as in `extract_priors`.
    """
    image_root = Path(image_root)
    outputs: dict[str, list[str]] = {}
    for row in rows:
        relative = row.get("landmark") or prior_path_for_image(row["image"])
        targets = outputs.setdefault(row["image"], [])
        if relative not in targets:
            targets.append(relative)
    targets = [_Image(image, image_root / image, files) for image, files in outputs.items()]
    return _write_priors(targets, Path(out_dir), extractor, overwrite=overwrite, progress=progress, launch=launch)


def _failure(image: _Image, error: BaseException) -> dict:
    if isinstance(error, FaceNotFoundError):  # the facts; the caller words the fix (Python option or CLI flag)
        return {"image": image.key, "outputs": image.outputs, "status": "no_face", "error": error.reason}
    return {"image": image.key, "outputs": image.outputs, "status": "error",
            "error": f"{type(error).__name__}: {error}"}


def _write_priors(
    images: list[_Image], out_dir: Path, extractor: FacialPriorExtractor, *, overwrite: bool, progress: bool,
    launch: Launch,
) -> PriorExtractionReport | None:
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved_out = out_dir.resolve()

    def outside(image: _Image) -> list[str]:
        return [t for t in image.outputs if os.path.isabs(t) or not (out_dir / t).resolve().is_relative_to(resolved_out)]

    def is_done(image: _Image, row) -> bool:
        return not overwrite and not outside(image) and all((out_dir / t).is_file() for t in image.outputs)

    def process(batch: list[_Image]) -> list[dict]:
        rows: dict[str, dict] = {}
        for image in batch:
            if outside(image):
                rows[image.key] = {"image": image.key, "outputs": image.outputs, "status": "error",
                                   "error": f"ValueError: output path(s) {outside(image)} are not inside {out_dir}"}
        readable = [image for image in batch if image.key not in rows]
        faces = extractor.detect([str(image.path) for image in readable]) if readable else []
        for image, face in zip(readable, faces):
            for target in image.outputs:
                save_prior(out_dir / target, face.prior)
            rows[image.key] = {"image": image.key, "outputs": image.outputs}
        return [rows[image.key] for image in batch]

    job = run_job(images, process, key=lambda image: image.key, key_field="image", batch_size=extractor.batch_size,
                  is_done=is_done, failure_row=_failure, fatal=(ImportError, FacialPriorWeightsError),
                  failures_path=out_dir / FAILURES_FILE, progress=progress, description="extract-priors", unit="img",
                  launch=launch)
    if job is None:  # another process of the launch: the main one reports
        return None
    outputs = {image.key: image.outputs for image in images}

    def files(keys: list[str]) -> list[str]:
        return list(dict.fromkeys(target for key in keys for target in outputs[key]))

    return PriorExtractionReport(files(job.done_keys), files(job.skipped_keys), job.failures, job.failures_path,
                                 samples_per_process=job.samples_per_process)
