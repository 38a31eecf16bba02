"""Batch facial affect analysis of image files: the library behind `emola analyze`.

Runs on `jobs.run_job`: results are appended to `results.jsonl` batch by batch (flushed and fsync'ed), so a killed
run loses at most one batch and a restarted run skips the images that already have a result. `results.csv` (one
row per face, one 0/1 column per FABA AU, like py-feat's tables) is regenerated from the JSONL at the end, so it
always describes everything the output folder holds. An image that cannot be read or has no face is recorded with
its `status` and error (in the JSONL and in `failures.json`) and retried on the next run; it never stops the others.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .faba import FABA_AUS, normalize_tasks
from .facial_prior import FaceNotFoundError, FacialPriorWeightsError, find_images, output_names
from .jobs import Launch, atomic_file, is_failure, latest_rows, read_jsonl, run_job

#: Row `status` values: "ok", or why the image has no result.
STATUSES = ("ok", "unreadable", "no_face", "error")
AU_COLUMNS = [f"AU{number}" for number in FABA_AUS]
CSV_COLUMNS = (["image", "status", "error", "emotion"] + AU_COLUMNS
               + ["face_x0", "face_y0", "face_x1", "face_y1", "face_score", "au_unparsed", "emotion_unparsed",
                  "negated_aus", "au_description", "emotion_description", "visualization"])


@dataclass
class AnalysisReport:
    """What `analyze_images` did: the output files, how many images were analysed now or skipped (already done),
    the images of this run that have no result (`{"image", "status", "error"}`), and how many images each
    process of the launch was given."""

    results_path: Path
    csv_path: Path
    failures_path: Path
    analyzed: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    samples_per_process: list[int] = field(default_factory=list)

    @property
    def num_processes(self) -> int:
        return len(self.samples_per_process)

    @property
    def ok(self) -> bool:
        return not self.failures


def load_analyzer(
    model: str | os.PathLike,
    backend: str | None = None,
    on_missing_face: str | None = "error",
    backend_options: dict[str, Any] | None = None,
    device: str | int | None = None,
    dtype: str = "auto",
):
    """A `facial-affect-analysis` pipeline for the checkpoint folder `model`, with its facial-prior extractor set.

    The extractor is the `backend` if given, else the one saved with the processor, else the model's
    `facial_prior_backend`. `on_missing_face` (`"error"` by default, so face-less images are reported) replaces
    the saved policy where the backend has one.
    """
    from transformers import pipeline

    from .facial_prior import FacialPriorExtractor
    from .pipeline_facial_affect import register_pipeline

    register_pipeline()
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    analyzer = pipeline("facial-affect-analysis", model=os.fspath(model), device=device, dtype=dtype)
    processor = analyzer.processor
    if not processor.use_facial_prior and backend is None and processor.facial_prior_extractor is None:
        return analyzer  # LLaVA-style checkpoint without the prior: nothing to detect
    options = dict(backend_options or {})
    if backend is not None:
        config = {"backend": backend, **options}
    elif processor.facial_prior_extractor is not None:
        config = {**processor.facial_prior_extractor, **options}
    else:
        config = {"backend": analyzer.model.config.facial_prior_backend, **options}
    extractor = FacialPriorExtractor.from_dict(config)
    if on_missing_face is not None and extractor.options.get("on_missing_face", on_missing_face) != on_missing_face:
        extractor = FacialPriorExtractor.from_dict(config, on_missing_face=on_missing_face)
    expected = analyzer.model.config.facial_prior_dim
    if processor.use_facial_prior and extractor.dim is not None and extractor.dim != expected:
        raise ValueError(
            f"The {extractor.backend!r} backend gives {extractor.dim}-d priors but {model} expects {expected}-d "
            f"(it was trained with {analyzer.model.config.facial_prior_backend!r}); choose that backend"
        )
    processor.set_facial_prior_extractor(extractor)
    return analyzer


def _failure_row(image: str, status: str, error: BaseException, tasks: tuple[str, ...]) -> dict:
    # A missing face is a fact of the image; how to analyse it anyway is worded by the caller (option or flag).
    message = error.reason if isinstance(error, FaceNotFoundError) else f"{type(error).__name__}: {error}"
    return {"image": image, "status": status, "error": message, "tasks": list(tasks)}


def analyze_images(
    analyzer,
    paths: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    tasks: str = "both",
    batch_size: int = 8,
    visualize: bool = False,
    progress: bool = True,
    launch: Launch = Launch(),
    **generate_kwargs: Any,
) -> AnalysisReport | None:
    """Analyse every image of `paths` (files or folders) with `analyzer` (a `FacialAffectAnalysisPipeline`) into
    `out_dir/results.jsonl`, `results.csv` and `failures.json`, resuming where a previous run stopped.

    `generate_kwargs` (e.g. `max_new_tokens`) go to `generate`. With `visualize`, one PNG per analysed image with the
    face box, landmarks, AUs and emotion is written under `out_dir/visualizations/`, named after the image
    (`photos/sub/a.jpg` -> `visualizations/sub/a.png`).

    With `launch=Launch.detect()` in every process of a `torchrun` / `accelerate launch`, each process analyses
    every n-th image and the main process merges the results (in input order) and returns the report; the others
    return None.
    """
    from .pipeline_facial_affect import build_result

    tasks = normalize_tasks(tasks)
    images = find_images(paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawings = {str(image): Path("visualizations") / name
                for image, name in (output_names(images, ".png") if visualize else {}).items()}

    def is_done(image: Path, row: dict | None) -> bool:
        return row is not None and not is_failure(row) and set(tasks) <= set(row.get("tasks", ()))

    def process(batch: list[Path]) -> list[dict]:
        rows, items = {}, []
        for image in batch:
            name = str(image)
            try:
                loaded = analyzer.load(name)
            except (ValueError, OSError) as error:
                rows[name] = _failure_row(name, "unreadable", error, tasks)
                continue
            try:
                items.append((name, analyzer.detect(loaded)))
            except FaceNotFoundError as error:
                rows[name] = _failure_row(name, "no_face", error, tasks)
            except (ValueError, OSError) as error:
                if isinstance(error, FacialPriorWeightsError):
                    raise  # the backend itself is unusable: every image would fail the same way
                rows[name] = _failure_row(name, "error", error, tasks)
        if items:
            descriptions = analyzer.generate_descriptions([item for _, item in items], tasks,
                                                          generate_kwargs=generate_kwargs)
            for (name, item), texts in zip(items, descriptions):
                row = {"image": name, "status": "ok", "error": None, "tasks": list(tasks),
                       **build_result(texts, item["face"])}
                if visualize:
                    target = drawings[name]
                    (out_dir / target).parent.mkdir(parents=True, exist_ok=True)
                    draw_analysis(item["image"], row).save(out_dir / target)
                    row["visualization"] = target.as_posix()
                rows[name] = row
        return [rows[str(image)] for image in batch]

    job = run_job(
        images, process, key=str, key_field="image", log_path=out_dir / "results.jsonl",
        failures_path=out_dir / "failures.json", batch_size=batch_size, is_done=is_done,
        failure_row=lambda image, error: _failure_row(str(image), "error", error, tasks), log_failures=True,
        fatal=(ImportError, FacialPriorWeightsError), progress=progress, description="emola analyze", unit="image",
        launch=launch,
    )
    if job is None:  # another process of the launch: the main one merges and writes the table
        return None
    report = AnalysisReport(job.log_path, out_dir / "results.csv", job.failures_path, analyzed=job.done,
                            skipped=job.skipped, failures=job.failures, samples_per_process=job.samples_per_process)
    write_results_csv(latest_rows(read_jsonl(report.results_path), "image").values(), report.csv_path)
    return report


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    return value


def results_to_csv_rows(rows) -> list[dict]:
    """Flat table rows (`CSV_COLUMNS`): one per face. AU columns are 1/0 when the AU answer was read, and empty when
    the AU question was not asked or its answer names no AU (`au_unparsed`), so 0 always means "read as absent"."""
    table = []
    for row in rows:
        flags = row.get("flags") or {}
        ok = row.get("status") == "ok"
        read_aus = ok and "au" in row.get("tasks", ()) and not flags.get("au_unparsed")
        present = {au["number"] for au in row.get("aus") or ()}
        box = row.get("face_box") or [None] * 4
        entry = {
            "image": row["image"],
            "status": row.get("status"),
            "error": row.get("error"),
            "emotion": row.get("emotion"),
            **{f"AU{number}": (int(number in present) if read_aus else None) for number in FABA_AUS},
            "face_x0": box[0], "face_y0": box[1], "face_x1": box[2], "face_y1": box[3],
            "face_score": row.get("face_score"),
            "au_unparsed": flags.get("au_unparsed"),
            "emotion_unparsed": flags.get("emotion_unparsed"),
            "negated_aus": " ".join(str(au) for au in flags.get("negated_aus", ())) or None,
            "au_description": row.get("au_description"),
            "emotion_description": row.get("emotion_description"),
            "visualization": row.get("visualization"),
        }
        table.append({key: _csv_value(value) for key, value in entry.items()})
    return table


def write_results_csv(rows, path: str | os.PathLike) -> None:
    """Write `results_to_csv_rows(rows)` atomically (a kill never leaves a half-written table)."""
    with atomic_file(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(results_to_csv_rows(rows))


def draw_analysis(image, result: dict):
    """The image with the face box and landmarks (`facial_prior.draw_landmarks`) and a side panel listing the
    predicted emotion and AUs. `result` is a pipeline output (or a `results.jsonl` row)."""
    from PIL import Image, ImageDraw, ImageFont

    from .facial_prior import FaceLandmarks, draw_landmarks, load_image

    image = load_image(image)
    if result.get("face_box") is not None or result.get("landmarks") is not None:
        landmarks = None if result.get("landmarks") is None else np.asarray(result["landmarks"], dtype=np.float32)
        face = FaceLandmarks(np.zeros(0, np.float32), landmarks, result.get("face_box"), result.get("face_score"),
                             "")
        image = draw_landmarks(image, face)
    emotion = result.get("emotion") or ("not asked" if result.get("emotion_description") is None else "not found")
    lines = [f"emotion: {emotion}"]
    if result.get("au_description") is not None:
        lines.append("AUs:" if result.get("aus") else "AUs: none found")
        lines += [f"  AU{au['number']} {au['name']}" for au in result.get("aus", ())]
    size = max(10, image.height // 32)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    panel = int(max(measure.textlength(line, font=font) for line in lines)) + 2 * size
    height = max(image.height, int((len(lines) + 1) * size * 1.3))
    canvas = Image.new("RGB", (image.width + panel, height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(lines):
        draw.text((image.width + size, size // 2 + number * size * 1.3), line, fill=(0, 0, 0), font=font)
    return canvas


__all__ = [
    "AU_COLUMNS",
    "AnalysisReport",
    "CSV_COLUMNS",
    "analyze_images",
    "draw_analysis",
    "load_analyzer",
    "results_to_csv_rows",
    "write_results_csv",
]
