"""A synthetic FABA-Instruct on disk, in the official layout: images, landmark `.npy` files, annotation JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..faba import TASKS
from .descriptions import AU_QUESTIONS, EMOTION_QUESTIONS, _pick, describe_aus, describe_emotion
from .expressions import AU_THRESHOLD, EMOTIONS, au_label
from .rendering import SyntheticFace, sample_face


_SPLIT_CODES = {"train": 1, "eval": 2}
_TASK_CODES = {"au": 1, "emotion": 2}


@dataclass
class SyntheticSample:
    """One sample of a synthetic FABA-Instruct split: the face, the training question and the description
    (the assistant answer in training, the `gpt4` reference in evaluation)."""

    id: str
    split: str
    task: str
    face: SyntheticFace
    question: str
    description: str

    @property
    def label(self) -> str:
        """The FABA eval label: "1, 2, 4" for the AU task, the emotion name for the emotion task."""
        return au_label(self.face.aus) if self.task == "au" else self.face.emotion

    @property
    def image_path(self) -> str:
        return f"FABAInstruct/{self.split}/images/{self.id}.png"

    @property
    def landmark_path(self) -> str:
        return f"FABAInstruct/{self.split}/landmarks/{self.id}.npy"

    def to_record(self) -> dict:
        """The annotation row in the official layout (train: conversations; eval: gpt4 + label)."""
        if self.split == "train":
            return {
                "source": "Synthetic",
                "id": self.id,
                "image": self.image_path,
                "conversations": [
                    {"from": "human", "value": self.question + "\n<image>"},
                    {"from": "gpt", "value": self.description},
                ],
                "landmark": self.landmark_path,
            }
        return {
            "id": self.id,
            "image": self.image_path,
            "landmark": self.landmark_path,
            "gpt4": self.description,
            "label": self.label,
        }


def synthetic_faba_sample(
    index: int, task: str = "au", split: str = "train", seed: int = 0, image_size: int = 336
) -> SyntheticSample:
    """Regenerate sample `index` of a synthetic FABA-Instruct (the one `write_synthetic_faba` writes) in memory.

    Each (seed, split, task, index) has its own random stream, so a sample does not depend on the dataset size.
    The emotion task cycles through the 7 classes (index % 7), so every split is class-balanced.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {list(_SPLIT_CODES)}, got {split!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    rng = np.random.default_rng([int(seed), _SPLIT_CODES[split], _TASK_CODES[task], int(index)])
    emotion = EMOTIONS[index % len(EMOTIONS)] if task == "emotion" else None
    face = sample_face(rng, task=task, emotion=emotion, size=image_size)
    if task == "au":
        description = describe_aus(face.aus, rng, emotion=face.emotion)
        question = _pick(rng, AU_QUESTIONS)
    else:
        description = describe_emotion(face.emotion, face.aus, rng)
        question = _pick(rng, EMOTION_QUESTIONS)
    return SyntheticSample(f"Synthetic/{task}/{index:06d}", split, task, face, question, description)


def _write_sample(root: Path, sample: SyntheticSample) -> dict:
    image_path, landmark_path = root / sample.image_path, root / sample.landmark_path
    image_path.parent.mkdir(parents=True, exist_ok=True)
    landmark_path.parent.mkdir(parents=True, exist_ok=True)
    sample.face.image.save(image_path, format="PNG", compress_level=1)
    np.save(landmark_path, sample.face.facial_prior.astype(np.float32))
    return sample.to_record()


def write_synthetic_faba(
    root: str | Path,
    num_train: int = 200,
    num_eval: int = 50,
    seed: int = 0,
    image_size: int = 336,
    tasks: Sequence[str] = TASKS,
    progress: bool = False,
) -> dict[str, Path]:
    """Write a synthetic FABA-Instruct in the official layout under `root` (the `--image_folder` of EmoLA).

    Per task ("au", "emotion"): `num_train` training and `num_eval` evaluation samples, lossless PNG images,
    136-d landmark priors (`normalize_landmarks`, float32 .npy) and the annotation files
    `FABAInstruct/train/train_{task}_anno.json` and `FABAInstruct/eval/eval_{task}_anno.json`. The same seed gives
    byte-identical files. Returns {"root", "train_au", "eval_au", "train_emotion", "eval_emotion", "info"} (the
    annotation paths of the requested tasks). A sample that fails does not stop the others; the failures are
    raised together at the end as a RuntimeError, after every successful sample has been written.
    """
    for name, value in (("num_train", num_train), ("num_eval", num_eval), ("seed", seed), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")
    tasks = tuple(tasks)
    if not tasks or any(task not in TASKS for task in tasks) or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct values among {list(TASKS)}, got {list(tasks)}")
    root = Path(root)
    jobs = [(split, task, count) for task in tasks for split, count in (("train", num_train), ("eval", num_eval))]
    total = sum(count for _, _, count in jobs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="synthetic FABA", unit="face")
    written: dict[str, Path] = {"root": root}
    failures: list[str] = []
    for split, task, count in jobs:
        records = []
        for index in range(count):
            try:
                sample = synthetic_faba_sample(index, task, split, int(seed), int(image_size))
                records.append(_write_sample(root, sample))
            except Exception as error:  # keep going; report everything at the end
                failures.append(f"{split}/{task}/{index}: {type(error).__name__}: {error}")
            if bar is not None:
                bar.update(1)
        path = root / "FABAInstruct" / split / f"{split}_{task}_anno.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written[f"{split}_{task}"] = path
    if bar is not None:
        bar.close()
    info = {
        "generator": "transformers_emola.synthetic",
        "seed": int(seed),
        "image_size": int(image_size),
        "image_format": "PNG",
        "num_train": int(num_train),
        "num_eval": int(num_eval),
        "tasks": list(tasks),
        "au_threshold": AU_THRESHOLD,
        "emotions": list(EMOTIONS),
        "landmarks": "68-point iBUG 300-W, normalize_landmarks -> (136,) float32 in [-1, 1]",
    }
    written["info"] = root / "FABAInstruct" / "synthetic_info.json"
    written["info"].write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if failures:
        raise RuntimeError(f"{len(failures)} of {total} synthetic samples failed:\n" + "\n".join(failures))
    return written
