"""Batched generation for EmoLA and the FABA-Bench prediction runner (resumable, nothing lost on a kill).

The official evaluation runs batch 1 and, when resumed, scores cached samples as ROUGE 0. Here the runner is
`jobs.run_job`: predictions are appended to `predictions.jsonl` batch by batch (flushed and fsync'ed), a restarted
run skips the ids already there, and scoring always reads the whole file, so a resumed run scores exactly like an
uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .faba import task_question
from .facial_prior.priors import load_prior
from .jobs import JobReport, Launch, run_job


def build_prompt(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@torch.inference_mode()
def generate_answers(
    model,
    processor,
    images: Sequence,
    questions: Sequence[str],
    facial_priors: np.ndarray | torch.Tensor | None = None,
    max_new_tokens: int = 256,
    **generate_kwargs: Any,
) -> list[str]:
    """Answer one question per image in a single left-padded batch (greedy unless `generate_kwargs` say otherwise).

    `facial_priors` (one row per image) may be omitted when the processor has a facial-prior extractor or the
    model does not use the prior.
    """
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images but {len(questions)} questions")
    if not images:
        return []
    prompts = [build_prompt(processor, question) for question in questions]
    kwargs = {"facial_priors": facial_priors} if facial_priors is not None and processor.use_facial_prior else {}
    # One image per prompt, nested as every family's processor reads it (Gemma 3 and Idefics3 need the nesting).
    inputs = processor(images=[[image] for image in images], text=prompts, padding=True, return_tensors="pt", **kwargs)
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    settings = {"do_sample": False, "max_new_tokens": max_new_tokens}
    settings.update(generate_kwargs)
    if settings.get("do_sample") is False:  # sampling knobs would only trigger generate's warnings
        for knob in ("temperature", "top_p"):
            settings.pop(knob, None)
    output = model.generate(**inputs, **settings)
    return processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1]:])


def _row_id(row: dict, index: int) -> str:
    return str(row.get("id") or row.get("image") or index)


def predict_faba_bench(
    model,
    processor,
    annotations: str | Path | list[dict],
    data_root: str | Path,
    task: str,
    out_dir: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    limit: int | None = None,
    progress: bool = True,
    launch: Launch = Launch(),
    **generate_kwargs: Any,
) -> tuple[Path, list[dict]] | None:
    """Generate answers for a FABA-Bench annotation file into `out_dir/predictions.jsonl`, resuming if present.

    Returns the predictions path and the failures (`{"id", "image", "status", "error"}`: unreadable image, bad
    prior file), which are also written to `out_dir/failures.json`; a failing sample never stops the run. Under a
    `launch` of several processes, each generates its share of the samples and the main process returns the merged
    file (the others return None): see `faba_bench_job`.
    """
    job = faba_bench_job(model, processor, annotations, data_root, task, out_dir, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, limit=limit, progress=progress, launch=launch,
                         **generate_kwargs)
    return None if job is None else (job.log_path, job.failures)


def faba_bench_job(
    model,
    processor,
    annotations: str | Path | list[dict],
    data_root: str | Path,
    task: str,
    out_dir: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    limit: int | None = None,
    progress: bool = True,
    launch: Launch = Launch(),
    **generate_kwargs: Any,
) -> JobReport | None:
    """`predict_faba_bench`, returning the whole `jobs.JobReport` (samples per process, samples generated now or
    by an earlier run) on the main process, and None on the others.

    It runs on `jobs.run_job`: with a `launch` of several processes, each takes every n-th sample into its own
    `predictions.part<i>of<n>.jsonl`, and the main process merges them into `predictions.jsonl` in annotation order.
    """
    from PIL import Image

    question = task_question(task)
    if not isinstance(annotations, list):
        annotations = json.loads(Path(annotations).read_text(encoding="utf-8"))
    rows = annotations[:limit] if limit is not None else annotations
    items = [(_row_id(row, index), row) for index, row in enumerate(rows)]
    out_dir = Path(out_dir)
    data_root = Path(data_root)
    use_prior = bool(getattr(processor, "use_facial_prior", False))
    config = model.config

    def process(batch: list[tuple[str, dict]]) -> list[dict]:
        results, ready, images, priors = {}, [], [], []
        for row_id, row in batch:
            try:
                with Image.open(data_root / row["image"]) as handle:
                    image = handle.convert("RGB")
                if use_prior and row.get("landmark"):
                    priors.append(load_prior(data_root / row["landmark"], dim=config.facial_prior_dim,
                                             backend=config.facial_prior_backend))
            except Exception as error:  # noqa: BLE001  (report every kind of bad sample and go on)
                results[row_id] = {"id": row_id, "image": row.get("image"), "status": "error",
                                   "error": f"{type(error).__name__}: {error}"}
                continue
            ready.append((row_id, row))
            images.append(image)
        if ready:
            answers = generate_answers(
                model, processor, images, [question] * len(images),
                facial_priors=np.stack(priors) if priors and len(priors) == len(images) else None,
                max_new_tokens=max_new_tokens, **generate_kwargs,
            )
            for (row_id, row), answer in zip(ready, answers):
                results[row_id] = {"id": row_id, "image": row.get("image"), "prediction": answer,
                                   "reference": row.get("gpt4", ""), "label": row.get("label")}
        return [results[row_id] for row_id, _ in batch]

    return run_job(
        items, process, key=lambda item: item[0], key_field="id", log_path=out_dir / "predictions.jsonl",
        failures_path=out_dir / "failures.json", batch_size=batch_size, progress=progress,
        description=f"FABA-Bench {task}", unit="face", launch=launch,
    )
