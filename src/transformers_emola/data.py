"""FABA-Instruct annotations -> a `datasets.Dataset` in TRL's conversational vision format.

Why a loader rather than `load_dataset("json")`: the official rows hold relative paths, LLaVA `conversations`
(`from`/`value` with an `<image>` marker in the text) and a separate `.npy` prior per image; eval rows hold no
conversation at all. This turns them into `images` (lazily decoded `Image` features: only paths are stored, so
20k images never sit in memory), `messages` (user/assistant turns with typed content, the image item first as
EmoLA's `preprocess_multimodal` moves it) and `facial_priors`, and checks every row *before* training starts, so a
bad path shows up with all the others at once instead of as a crash at step 3,000.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .faba import TASK_QUESTIONS, TASKS
from .facial_prior.priors import as_prior_array, load_prior

logger = logging.getLogger(__name__)

SPLITS = ("train", "eval")
ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IMAGE_PLACEHOLDER = "<image>"


class FabaValidationError(ValueError):
    """Every problem found in a FABA-Instruct annotation file, raised together (`.problems`: (row, message))."""

    def __init__(self, message: str, problems: list[tuple[str, str]]):
        super().__init__(message)
        self.problems = problems


@dataclass
class FabaLoadReport:
    """What `load_faba_instruct` found: rows read, rows kept, and each invalid row with its problems."""

    source: str
    num_rows: int = 0
    num_valid: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_ids)

    def summary(self) -> str:
        text = f"FABA-Instruct {self.source}: {self.num_valid} valid of {self.num_rows} rows"
        if self.skipped_ids:
            text += f"; {self.num_skipped} invalid rows skipped ({len(self.problems)} problems)"
        return text


# ---------------------------------------------------------------------------------------------------------------
# Reading and resolving
# ---------------------------------------------------------------------------------------------------------------
def resolve_annotation_file(root: str | os.PathLike, split: str, task: str) -> Path:
    """Find `{split}_{task}_anno.json` (or any `*{task}*anno*.json`) in a FABA-Instruct data folder.

    Looks in `root/{split}`, `root/FABAInstruct/{split}` and `root`, the official layout being
    `data/FABAInstruct/{train,eval}/*_anno.json`.
    """
    if split not in SPLITS or task not in TASKS:
        raise ValueError(f"To find the annotations in a folder, pass split in {SPLITS} and task in {TASKS}; "
                         f"got split={split!r}, task={task!r}")
    root = Path(root)
    folders = [root / split, root / "FABAInstruct" / split, root]
    for folder in folders:
        exact = folder / f"{split}_{task}_anno.json"
        if exact.is_file():
            return exact
    for folder in folders:
        if folder.is_dir():
            found = sorted(p for p in folder.glob(f"*{task}*anno*.json*") if p.is_file())
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise ValueError(f"Several {task} annotation files in {folder}: {[p.name for p in found]}; "
                                 "pass the file itself")
    raise FileNotFoundError(f"No {split}_{task}_anno.json under {root} (looked in {[str(f) for f in folders]})")


def _read_rows(path: Path) -> list:
    try:
        with open(path, encoding="utf-8") as handle:
            if path.suffix == ".jsonl":
                rows = [json.loads(line) for line in handle if line.strip()]
            else:
                rows = json.load(handle)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read FABA-Instruct annotations {path}: {error}") from error
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of annotation rows, got {type(rows).__name__}")
    return rows


def infer_task(name: str) -> str | None:
    """"au" or "emotion" from an annotation file name such as `train_au_anno.json`, else None."""
    stem = Path(name).name.lower()
    if re.search(r"(^|[_\-.])aus?([_\-.]|$)", stem) or "action_unit" in stem:
        return "au"
    if "emotion" in stem or "expression" in stem:
        return "emotion"
    return None


def _resolve(root: Path, path: str) -> str:
    return path if os.path.isabs(path) else str(root / path)


# ---------------------------------------------------------------------------------------------------------------
# One row -> one record (or problems)
# ---------------------------------------------------------------------------------------------------------------
def _text(text: str) -> list[dict]:
    return [{"type": "text", "text": text}]


def _system_turn(system_prompt: str | None) -> list[dict]:
    return [{"role": "system", "content": _text(system_prompt)}] if system_prompt else []


def conversations_to_messages(conversations: Any, system_prompt: str | None = None) -> tuple[list[dict], list[str]]:
    """LLaVA `conversations` -> TRL `messages` (typed content), plus the problems found (empty when valid).

    The `<image>` marker is removed from the text and an `{"type": "image"}` item is put first in the turn that
    held it (the first user turn when no turn does), as EmoLA's `preprocess_multimodal` moves it to the front.
    """
    problems: list[str] = []
    if not isinstance(conversations, list) or not conversations:
        return [], [f"'conversations' must be a non-empty list of turns, got {type(conversations).__name__}"]
    turns: list[tuple[str, str]] = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            problems.append(f"turn {index} must be a dict with a string 'value', got {turn!r:.80}")
            continue
        role = ROLE_MAP.get(str(turn.get("from", "")).lower())
        if role is None:
            problems.append(f"turn {index} has unknown speaker 'from'={turn.get('from')!r} "
                            f"(expected one of {sorted(ROLE_MAP)})")
            continue
        turns.append((role, turn["value"]))
    if problems:
        return [], problems
    system = [value for role, value in turns if role == "system"]
    dialogue = [(role, value) for role, value in turns if role != "system"]
    if len(system) > 1 or (system and turns[0][0] != "system"):
        problems.append("a 'system' turn may only come first, once")
    expected = ["user", "assistant"] * (len(dialogue) // 2 + 1)
    if not dialogue or [role for role, _ in dialogue] != expected[: len(dialogue)] or dialogue[-1][0] != "assistant":
        problems.append("turns must alternate human/gpt, starting with human and ending with gpt, got "
                        f"{[role for role, _ in dialogue]}")
    image_turns = [i for i, (_, value) in enumerate(dialogue) if IMAGE_PLACEHOLDER in value]
    markers = sum(value.count(IMAGE_PLACEHOLDER) for _, value in dialogue)
    if markers > 1:
        problems.append(f"expected one {IMAGE_PLACEHOLDER} (EmoLA takes one image per sample), found {markers}")
    elif image_turns and dialogue[image_turns[0]][0] != "user":
        problems.append(f"{IMAGE_PLACEHOLDER} must be in a human turn")
    for role, value in dialogue:
        if role == "assistant" and not value.strip():
            problems.append("a gpt turn has an empty answer")
    if problems:
        return [], problems
    image_turn = image_turns[0] if image_turns else 0
    messages = _system_turn(system[0] if system else system_prompt)
    for index, (role, value) in enumerate(dialogue):
        if role == "user":
            content = _text(value.replace(IMAGE_PLACEHOLDER, "").strip())
            if index == image_turn:
                content = [{"type": "image", "text": None}] + content
        else:
            content = _text(value)
        messages.append({"role": role, "content": content})
    return messages, []


def eval_messages(task: str, system_prompt: str | None = None, answer: str | None = None) -> list[dict]:
    """The FABA-Bench prompt of `task` (image first, then the official question); optionally the reference answer."""
    messages = _system_turn(system_prompt)
    messages.append({"role": "user", "content": [{"type": "image", "text": None}] + _text(TASK_QUESTIONS[task])})
    if answer is not None:
        messages.append({"role": "assistant", "content": _text(answer)})
    return messages


def _load_prior(path: str, dim: int | None) -> tuple[np.ndarray | None, str | None]:
    try:
        return load_prior(path, dim=dim), None
    except (OSError, ValueError) as error:  # one problem of the row, reported with all the others
        return None, str(error)


def _label_text(label: Any) -> tuple[str | None, str | None]:
    if label is None:
        return None, None
    if isinstance(label, bool):
        return None, f"'label' must be a string, an int or a list of AU numbers, got {label!r}"
    if isinstance(label, (int, str)):
        return str(label), None
    if isinstance(label, list) and label and all(isinstance(x, int) and not isinstance(x, bool) for x in label):
        return ", ".join(str(x) for x in label), None  # the official AU format "1, 2, 4"
    return None, f"'label' must be a string, an int or a list of AU numbers, got {label!r:.80}"


def _row_name(row: Any, index: int) -> str:
    row_id = row.get("id") if isinstance(row, dict) else None
    return f"#{index} ({row_id})" if row_id not in (None, "") else f"#{index}"


def _build_record(
    row: Any,
    index: int,
    image_root: Path,
    landmark_root: Path,
    split: str | None,
    task: str | None,
    system_prompt: str | None,
    use_facial_prior: bool,
    precomputed_priors: bool,
    facial_prior_dim: int | None,
    include_reference_answer: bool,
    verify_images: bool,
) -> tuple[dict | None, list[str]]:
    if not isinstance(row, dict):
        return None, [f"row must be a JSON object, got {type(row).__name__}"]
    problems: list[str] = []
    image = row.get("image")
    image_path = None
    if not isinstance(image, str) or not image:
        problems.append("missing 'image' path")
    else:
        image_path = _resolve(image_root, image)
        if not os.path.isfile(image_path):
            problems.append(f"image not found: {image_path}")
        elif verify_images:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(image_path) as handle:
                    handle.size  # the header only: cheap, catches non-image files
            except (OSError, UnidentifiedImageError) as error:
                problems.append(f"image {image_path} cannot be opened: {error}")

    is_train = split == "train" or (split is None and "conversations" in row)
    reference = row.get("gpt4")
    if reference is not None and (not isinstance(reference, str) or not reference.strip()):
        problems.append("'gpt4' (the reference description) must be a non-empty string")
        reference = None
    label, label_problem = _label_text(row.get("label"))
    if label_problem:
        problems.append(label_problem)
    if is_train:
        if "conversations" not in row:
            problems.append("training row has no 'conversations'")
            messages = []
        else:
            messages, conversation_problems = conversations_to_messages(row["conversations"], system_prompt)
            problems.extend(conversation_problems)
    else:
        answer = reference if include_reference_answer else None
        if include_reference_answer and reference is None:
            problems.append("include_reference_answer=True but the row has no 'gpt4' reference")
        messages = eval_messages(task, system_prompt, answer) if task else []

    prior = None
    if use_facial_prior and precomputed_priors:
        landmark = row.get("landmark")
        if not isinstance(landmark, str) or not landmark:
            problems.append("missing 'landmark' (.npy facial prior); pass facial_prior_extractor= to compute it")
        else:
            prior, prior_problem = _load_prior(_resolve(landmark_root, landmark), facial_prior_dim)
            if prior_problem:
                problems.append(prior_problem)
    if problems:
        return None, problems
    record = {
        "id": str(row.get("id", index)),
        "task": task,
        "images": [image_path],
        "messages": messages,
        "reference": reference,
        "label": label,
    }
    if use_facial_prior:
        record["facial_priors"] = prior.tolist() if prior is not None else None
    return record, []


# ---------------------------------------------------------------------------------------------------------------
# On-the-fly priors
# ---------------------------------------------------------------------------------------------------------------
class _ExtractPriors:
    """`Dataset.map` function: priors for a batch of image paths; a failing image is isolated and recorded."""

    def __init__(self, extractor: Callable, dim: int | None):
        self.extractor = extractor
        self.dim = dim

    def _run(self, paths: list[str]) -> np.ndarray:
        from PIL import Image

        from .facial_prior import FacialPriorExtractor

        if isinstance(self.extractor, FacialPriorExtractor):
            # It reads the files itself: insightface_2d106 with cv2.imread, as the official EmoLA extraction did
            # (PIL decodes some JPEGs differently), the other backends with load_image (EXIF orientation applied).
            return as_prior_array(self.extractor(paths), num_images=len(paths), name="the extractor's output")
        images = []
        for path in paths:
            with Image.open(path) as handle:
                image = handle.convert("RGB")
            image.filename = path  # extractors name failures (and the precomputed backend finds files) by it
            images.append(image)
        return as_prior_array(self.extractor(images), num_images=len(paths), name="the extractor's output")

    def __call__(self, batch: dict) -> dict:
        paths = [images[0] for images in batch["images"]]
        try:
            rows: list = list(self._run(paths))
            errors: list = [None] * len(paths)
        except Exception:  # isolate the failing image(s): redo this batch one by one
            rows, errors = [], []
            for path in paths:
                try:
                    rows.append(self._run([path])[0])
                    errors.append(None)
                except Exception as error:
                    rows.append(None)
                    errors.append(f"facial prior extraction failed for {path}: {type(error).__name__}: {error}")
        priors = []
        for i, prior in enumerate(rows):
            if prior is not None and self.dim is not None:
                try:
                    as_prior_array(prior, dim=self.dim, name=f"the extractor's prior for {paths[i]}")
                except ValueError as error:
                    errors[i], prior = str(error), None
            priors.append(prior.tolist() if prior is not None else None)
        return {"facial_priors": priors, "_prior_error": errors}


def _extractor_fingerprint(extractor: Any) -> str:
    """A stable name for the extractor's settings (hashing the extractor itself would pickle its models)."""
    import hashlib

    to_dict = getattr(extractor, "to_dict", None)
    description = json.dumps(to_dict(), sort_keys=True, default=str) if callable(to_dict) else repr(extractor)
    return hashlib.sha256(f"{type(extractor).__qualname__}:{description}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------------------------
def _features(use_facial_prior: bool, images_as_paths: bool):
    from datasets import Features, Image, List, Value

    text_item = {"type": Value("string"), "text": Value("string")}
    features = {
        "id": Value("string"),
        "task": Value("string"),
        "images": List(Value("string")) if images_as_paths else List(Image()),
        "messages": List({"role": Value("string"), "content": List(text_item)}),
        "reference": Value("string"),
        "label": Value("string"),
    }
    if use_facial_prior:
        features["facial_priors"] = List(Value("float32"))
    return Features(features)


def _generate(shards: list[list[dict]]):
    for shard in shards:
        yield from shard


def _format_problems(source: str, num_rows: int, problems: list[tuple[str, str]]) -> str:
    rows = len({name for name, _ in problems})
    lines = [f"{rows} of {num_rows} FABA-Instruct rows in {source} are invalid ({len(problems)} problems); "
             "fix them or pass on_invalid='skip':"]
    lines += [f"  - row {name}: {message}" for name, message in problems]
    if problems and sum("image not found" in message for _, message in problems) == num_rows:
        lines.append("  (no image was found: is image_root the folder the annotation paths are relative to?)")
    return "\n".join(lines)


def load_faba_instruct(
    annotations: str | os.PathLike | Sequence[dict],
    image_root: str | os.PathLike,
    split: str | None = None,
    task: str | None = None,
    *,
    landmark_root: str | os.PathLike | None = None,
    facial_prior_extractor: Callable | None = None,
    facial_prior_dim: int | None = None,
    use_facial_prior: bool = True,
    system_prompt: str | None = None,
    include_reference_answer: bool = False,
    on_invalid: str = "raise",
    verify_images: bool = False,
    streaming: bool = False,
    num_proc: int | None = None,
    max_samples: int | None = None,
    return_report: bool = False,
):
    """Load FABA-Instruct annotations as a `datasets.Dataset` ready for TRL's `SFTTrainer` (vision format).

    Args:
        annotations: a `.json` list / `.jsonl` file, a list of row dicts, or a data folder in which
            `{split}_{task}_anno.json` is looked up (see `resolve_annotation_file`).
        image_root: the folder the rows' `image` (and `landmark`) paths are relative to (EmoLA's `--image_folder`).
        split: `"train"` (rows must hold `conversations`), `"eval"` (the user turn is the official FABA-Bench
            question of `task`) or None (each row by its content).
        task: `"au"` or `"emotion"`; inferred from the file name when omitted. Needed for eval rows.
        landmark_root: where `landmark` paths are relative to (defaults to `image_root`).
        facial_prior_extractor: a callable `images -> (N, dim)` array (e.g. `FacialPriorExtractor`); when given,
            the priors are computed from the images instead of read from the `landmark` files.
        facial_prior_dim: the prior length the model expects (e.g. `model.config.facial_prior_dim`); by default
            the most common length in the data, every other length being reported.
        use_facial_prior: False drops the priors (the LLaVA-LoRA baseline).
        system_prompt: adds a system turn (e.g. `faba.VICUNA_V1_SYSTEM_PROMPT`, the official training prompt);
            None keeps the chat template's default (the evaluation prompt).
        include_reference_answer: eval rows get the `gpt4` reference as assistant turn (for an eval loss).
        on_invalid: `"raise"` (one `FabaValidationError` listing every problem of every row) or `"skip"` (drop
            the invalid rows, log a warning with the count; see the report and `dataset.info.description`).
        verify_images: also open each image's header (catches corrupt files; slower on 20k images).
        streaming: return an `IterableDataset` (rows are validated up front either way).
        num_proc: processes for the on-the-fly prior extraction (`Dataset.map`).
        max_samples: keep the first `max_samples` valid rows.
        return_report: also return the `FabaLoadReport`.

    Returns:
        A `Dataset` (or `IterableDataset`) with columns `id`, `task`, `images` (a list of one lazily decoded
        image), `messages`, `reference` and `label` (eval fields, None on training rows; labels as strings such as
        `"1, 2, 4"` or `"Happiness"`) and `facial_priors` (float32 list) unless `use_facial_prior=False`; with
        `return_report=True`, the tuple `(dataset, report)`.

    Example:

    ```python
    >>> import tempfile
    >>> from transformers_emola.data import load_faba_instruct
    >>> from transformers_emola.synthetic import write_synthetic_faba
    >>> root = tempfile.mkdtemp()
    >>> paths = write_synthetic_faba(root, num_train=2, num_eval=1, image_size=32, tasks=["au"])
    >>> dataset = load_faba_instruct(paths["train_au"], image_root=root, split="train")
    >>> dataset.column_names
    ['id', 'task', 'images', 'messages', 'reference', 'label', 'facial_priors']
    >>> [m["role"] for m in dataset[0]["messages"]], dataset[0]["messages"][0]["content"][0]["type"]
    (['user', 'assistant'], 'image')
    >>> len(dataset[0]["facial_priors"]), dataset[0]["images"][0].size
    (136, (32, 32))

    ```
    """
    if split not in (None, *SPLITS):
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if task not in (None, *TASKS):
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
    if facial_prior_dim is not None and (not isinstance(facial_prior_dim, int) or facial_prior_dim < 1):
        raise ValueError(f"facial_prior_dim must be a positive int, got {facial_prior_dim!r}")
    if max_samples is not None and max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(f"image_root {image_root} is not a folder")
    landmark_root = Path(landmark_root) if landmark_root is not None else image_root

    if isinstance(annotations, (str, os.PathLike)):
        path = Path(annotations)
        if path.is_dir():
            if task is None or split is None:
                raise ValueError(f"{path} is a folder: pass split= and task= to pick its annotation file")
            path = resolve_annotation_file(path, split, task)
        elif not path.is_file():
            raise FileNotFoundError(f"FABA-Instruct annotations not found: {path}")
        rows = _read_rows(path)
        source = str(path)
        task = task or infer_task(path.name)
    else:
        rows = list(annotations)
        source = "<rows>"

    extractor = facial_prior_extractor if use_facial_prior else None
    if extractor is not None and facial_prior_dim is None:
        facial_prior_dim = getattr(extractor, "dim", None)
    needs_question = [i for i, row in enumerate(rows) if split == "eval" or
                      (split is None and isinstance(row, dict) and "conversations" not in row)]
    if needs_question and task is None:
        raise ValueError(f"{source} has {len(needs_question)} eval rows (no 'conversations'), whose question depends "
                         f"on the task: pass task='au' or task='emotion'")

    report = FabaLoadReport(source=source, num_rows=len(rows))
    records: list[dict | None] = []
    problems_by_row: dict[int, list[str]] = {}
    for index, row in enumerate(rows):
        record, problems = _build_record(
            row, index, image_root, landmark_root, split, task, system_prompt, use_facial_prior,
            extractor is None, facial_prior_dim, include_reference_answer, verify_images,
        )
        records.append(record)
        if problems:
            problems_by_row[index] = problems

    # Priors of another length than the data's usual one are reported too (the model takes exactly one length).
    if use_facial_prior and extractor is None and facial_prior_dim is None:
        lengths = Counter(len(r["facial_priors"]) for r in records if r is not None)
        if len(lengths) > 1:
            usual = lengths.most_common(1)[0][0]
            for index, record in enumerate(records):
                if record is not None and len(record["facial_priors"]) != usual:
                    problems_by_row[index] = [f"facial prior has dimension {len(record['facial_priors'])}, while "
                                              f"most rows have {usual} (set facial_prior_dim to choose)"]
                    records[index] = None

    def finish(problem_rows: dict[int, list[str]]) -> list[int]:
        """Raise or record the problems; return the indices to drop."""
        problems = [(_row_name(rows[i], i), message) for i in sorted(problem_rows) for message in problem_rows[i]]
        if not problems:
            return []
        if on_invalid == "raise":
            raise FabaValidationError(_format_problems(source, len(rows), problems), problems)
        report.problems.extend(problems)
        report.skipped_ids.extend(_row_name(rows[i], i) for i in sorted(problem_rows))
        logger.warning("Skipping %d invalid FABA-Instruct rows in %s (%d problems), e.g. %s", len(problem_rows),
                       source, len(problems), "; ".join(f"{n}: {m}" for n, m in problems[:3]))
        return sorted(problem_rows)

    if extractor is None or streaming:
        finish(problems_by_row)
    kept = [r for i, r in enumerate(records) if r is not None and i not in problems_by_row]
    kept_rows = [i for i, r in enumerate(records) if r is not None and i not in problems_by_row]
    if max_samples is not None:
        kept, kept_rows = kept[:max_samples], kept_rows[:max_samples]

    from datasets import Dataset, IterableDataset, List, Value
    from datasets import Image as ImageFeature

    split_name = split or "train"
    path_features = _features(use_facial_prior, images_as_paths=True)
    batch_size = getattr(extractor, "batch_size", 16)
    if streaming:
        # Shards of rows, so that DataLoader workers and `shuffle` split the stream by shard.
        shards = [kept[start : start + 512] for start in range(0, len(kept), 512)] or [[]]
        dataset = IterableDataset.from_generator(_generate, features=path_features, gen_kwargs={"shards": shards},
                                                 split=split_name)
        if extractor is not None:
            # Streaming extracts lazily, so a failing image can only raise when its batch is reached.
            extract = _ExtractPriors(extractor, facial_prior_dim)

            def extract_or_raise(batch):
                out = extract(batch)
                failed = [f"row {row_id}: {error}" for row_id, error in zip(batch["id"], out["_prior_error"]) if error]
                if failed:
                    raise ValueError("; ".join(failed))
                return {"facial_priors": out["facial_priors"]}

            dataset = dataset.map(extract_or_raise, batched=True, batch_size=batch_size, features=path_features)
        report.num_valid = len(kept)
    else:
        if extractor is None:  # the Image feature stores the path strings as {"path": ..., "bytes": None}
            dataset = Dataset.from_list(kept, features=_features(use_facial_prior, False), split=split_name)
        else:
            dataset = Dataset.from_list(kept, features=path_features, split=split_name)
            features = path_features.copy()
            features["_prior_error"] = Value("string")
            fingerprint = f"{dataset._fingerprint}-priors-{_extractor_fingerprint(extractor)}"
            dataset = dataset.map(_ExtractPriors(extractor, facial_prior_dim), batched=True, batch_size=batch_size,
                                  num_proc=num_proc, features=features, desc="facial priors",
                                  new_fingerprint=fingerprint)
            errors = dataset["_prior_error"]
            for position, error in enumerate(errors):
                if error:
                    problems_by_row.setdefault(kept_rows[position], []).append(error)
            finish(problems_by_row)  # raises with every problem, the extraction failures included
            failed = {position for position, error in enumerate(errors) if error}
            if failed:
                dataset = dataset.select([p for p in range(len(dataset)) if p not in failed])
            dataset = dataset.remove_columns("_prior_error")
        report.num_valid = len(dataset)
    if streaming or extractor is not None:
        # Only paths are stored; the Image feature opens each file when its row is read.
        dataset = dataset.cast_column("images", List(ImageFeature()))
    dataset.info.description = report.summary()
    return (dataset, report) if return_report else dataset


def validate_faba_instruct(annotations, image_root, split=None, task=None, **kwargs) -> FabaLoadReport:
    """Check FABA-Instruct annotations without stopping at problems: the report lists every invalid row."""
    kwargs.update(on_invalid="skip", return_report=True)
    _, report = load_faba_instruct(annotations, image_root, split=split, task=task, **kwargs)
    return report


def assistant_answers(dataset) -> list[str]:
    """The assistant texts of a dataset's `messages` (e.g. the corpus for a tiny tokenizer)."""
    answers = []
    for messages in dataset["messages"] if hasattr(dataset, "column_names") else (r["messages"] for r in dataset):
        for message in messages:
            if message["role"] == "assistant":
                answers.extend(item["text"] for item in message["content"] if item["type"] == "text")
    return answers


__all__ = [
    "FabaLoadReport",
    "FabaValidationError",
    "assistant_answers",
    "conversations_to_messages",
    "eval_messages",
    "infer_task",
    "load_faba_instruct",
    "resolve_annotation_file",
    "validate_faba_instruct",
]
