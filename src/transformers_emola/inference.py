"""Batched generation for EmoLA and the FABA-Bench prediction runner (resumable, nothing lost on a kill).

The official evaluation runs batch 1 and, when resumed, scores cached samples as ROUGE 0. Here predictions are
appended to `predictions.jsonl` batch by batch (flushed and fsync'ed), a restarted run skips the ids already
there, and scoring always reads the whole file, so a resumed run scores exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .processing_emola import AU_QUESTION, EMOTION_QUESTION

TASK_QUESTIONS = {"au": AU_QUESTION, "emotion": EMOTION_QUESTION}


def task_question(task: str) -> str:
    """The official FABA-Bench question of `task` ("au" or "emotion")."""
    if task not in TASK_QUESTIONS:
        raise ValueError(f"task must be one of {sorted(TASK_QUESTIONS)}, got {task!r}")
    return TASK_QUESTIONS[task]


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


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines file; a truncated last line (a kill mid-write) is ignored, anything else is an error."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break  # half-written final line from an interrupted run: that sample is simply redone
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
    return rows


def truncate_partial_line(path: str | Path) -> None:
    """Cut a half-written last line (left by a kill mid-write) so the next append starts on a fresh line."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: str | Path, rows: Sequence[dict]) -> None:
    """Append rows durably (flush + fsync), so a kill loses at most the batch being written."""
    with open(path, "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


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
    **generate_kwargs: Any,
) -> tuple[Path, list[dict]]:
    """Generate answers for a FABA-Bench annotation file into `out_dir/predictions.jsonl`, resuming if present.

    Returns the predictions path and the list of failures (`{"id", "error"}`: unreadable image, bad prior file),
    which are also written to `out_dir/failures.json`; a failing sample never stops the run.
    """
    from PIL import Image

    question = task_question(task)
    if not isinstance(annotations, list):
        annotations = json.loads(Path(annotations).read_text(encoding="utf-8"))
    rows = annotations[:limit] if limit is not None else annotations
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = out_dir / "predictions.jsonl"
    truncate_partial_line(predictions_path)
    done = {row["id"] for row in read_jsonl(predictions_path)}
    pending = [(i, row) for i, row in enumerate(rows) if _row_id(row, i) not in done]
    failures: list[dict] = []
    data_root = Path(data_root)
    use_prior = bool(getattr(processor, "use_facial_prior", False))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), initial=len(rows) - len(pending), desc=f"FABA-Bench {task}", unit="face")
    for start in range(0, len(pending), batch_size):
        batch, images, priors = [], [], []
        for index, row in pending[start : start + batch_size]:
            row_id = _row_id(row, index)
            try:
                with Image.open(data_root / row["image"]) as handle:
                    image = handle.convert("RGB")
                if use_prior and row.get("landmark"):
                    prior = np.load(data_root / row["landmark"]).astype(np.float32).reshape(-1)
                    if prior.shape[0] != model.config.facial_prior_dim:
                        raise ValueError(
                            f"{row['landmark']} holds {prior.shape[0]} numbers, the model expects "
                            f"{model.config.facial_prior_dim}"
                        )
                    priors.append(prior)
            except Exception as error:  # noqa: BLE001  (report every kind of bad sample and go on)
                failures.append({"id": row_id, "image": row.get("image"), "error": f"{type(error).__name__}: {error}"})
                continue
            batch.append((row_id, row))
            images.append(image)
        if batch:
            answers = generate_answers(
                model, processor, images, [question] * len(images),
                facial_priors=np.stack(priors) if priors and len(priors) == len(images) else None,
                max_new_tokens=max_new_tokens, **generate_kwargs,
            )
            append_jsonl(predictions_path, [
                {"id": row_id, "image": row.get("image"), "prediction": answer, "reference": row.get("gpt4", ""),
                 "label": row.get("label")}
                for (row_id, row), answer in zip(batch, answers)
            ])
        if bar is not None:
            bar.update(len(pending[start : start + batch_size]))
    if bar is not None:
        bar.close()
    (out_dir / "failures.json").write_text(json.dumps(failures, indent=2), encoding="utf-8")
    return predictions_path, failures
