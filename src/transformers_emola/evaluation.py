"""FABA-Bench evaluation, report side: score a predictions file and write the report (JSON, Markdown, plots).

A predictions file is JSON Lines, one sample per line: {"id", "prediction", "reference", "label"}. It is what the
generation runner writes, and what `emola evaluate --predictions FILE` scores.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .faba import AU_NAMES, EMOTIONS, TASKS
from .jobs import Launch
from .metrics.parsing import emotion_label_to_index, parse_au_label
from .metrics.scoring import compute_au_f1_folds, compute_fer_accuracy, compute_rege


__all__ = [
    "EvaluationReport",
    "PREDICTION_FIELDS",
    "evaluate_model",
    "format_summary",
    "read_predictions",
    "report_figure",
    "score_predictions_file",
    "score_traditional",
    "write_report",
]

PREDICTION_FIELDS = ("id", "prediction", "reference", "label")


def read_predictions(
    path: str | Path, on_error: str = "raise", limit: int | None = None
) -> tuple[list[dict], list[dict]]:
    """Records of a predictions.jsonl file, and the lines that could not be read.

    Args:
        path: the JSON Lines file.
        on_error: "raise" (ValueError naming the line) or "skip" (collect {"line", "error"} and go on).
        limit: read only the first `limit` non-empty lines.

    Returns:
        (records, skipped): valid records in file order; skipped lines (empty when `on_error="raise"`).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of lines, got {limit}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file not found: {path}")
    records, skipped = [], []
    read = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if limit is not None and read >= limit:
                break
            read += 1
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                missing = [key for key in PREDICTION_FIELDS if key not in record]
                if missing:
                    raise ValueError(f"missing field(s) {missing}")
                for key in ("prediction", "reference"):
                    if not isinstance(record[key], str):
                        raise ValueError(f"{key!r} must be a string, got {type(record[key]).__name__}")
            except ValueError as error:  # json.JSONDecodeError is a ValueError
                message = f"{path}:{number}: {error}"
                if on_error == "raise":
                    raise ValueError(message) from None
                skipped.append({"line": number, "error": str(error)})
                continue
            records.append(record)
    return records, skipped


def score_predictions_file(
    path: str | Path,
    task: str,
    mode: str = "paper",
    au_set: str = "faba",
    *,
    on_error: str = "raise",
    limit: int | None = None,
    return_details: bool = False,
) -> dict:
    """`compute_rege` on a predictions.jsonl file ({"id", "prediction", "reference", "label"} per line).

    Args:
        path: the predictions file.
        task, mode, au_set: as in `compute_rege`.
        on_error: "raise" stops at the first unreadable line or invalid label; "skip" scores the rest and lists the
            skipped lines in `result["skipped"]` ({"line" or "id", "error"}).
        limit: score only the first `limit` non-empty lines.
        return_details: add per-sample "details" (with the sample "id").

    Example:
        >>> result = score_predictions_file("predictions.jsonl", task="au")  # doctest: +SKIP
        >>> result["s_rege"]  # doctest: +SKIP
    """
    records, skipped = read_predictions(path, on_error=on_error, limit=limit)
    if on_error == "skip":
        # Check each label on its own so that one bad label costs one sample, not the run.
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}; expected one of {list(TASKS)}.")
        kept = []
        for record in records:
            try:
                if task == "au":
                    parse_au_label(record["label"], mode=mode, au_set=au_set)
                else:
                    emotion_label_to_index(record["label"])
            except ValueError as error:
                if "Unknown mode" in str(error) or "Unknown au_set" in str(error):
                    raise
                skipped.append({"id": record["id"], "error": str(error)})
                continue
            kept.append(record)
        records = kept
    if not records:
        raise ValueError(f"{path}: no valid prediction to score ({len(skipped)} line(s) skipped).")
    result = compute_rege(
        [r["prediction"] for r in records],
        [r["reference"] for r in records],
        [r["label"] for r in records],
        task=task,
        mode=mode,
        au_set=au_set,
        return_details=return_details,
    )
    if return_details:
        for record, row in zip(records, result["details"]):
            row["id"] = record["id"]
    result["skipped"] = skipped
    return result


def _json_safe(value):
    """NaN -> null and non-string keys -> strings, so report.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _markdown(result: dict, task: str) -> str:
    lines = [
        f"# FABA-Bench REGE report ({task}, {result.get('mode', '?')} mode)",
        "",
        "| S_re | S_ge | S_rege | samples | ROUGE failures |",
        "|---:|---:|---:|---:|---:|",
        f"| {_fmt(result['s_re'])} | {_fmt(result['s_ge'])} | {_fmt(result['s_rege'])} | {result['num_samples']} "
        f"| {result.get('num_rouge_failures', 0)} |",
        "",
    ]
    if task == "au":
        lines += [f"AU set: {result.get('au_set', 'faba')}; mean per-AU accuracy: {_fmt(result.get('au_accuracy'))}",
                  "", "| AU | name | F1 | accuracy |", "|---|---|---:|---:|"]  # fmt: skip
        for au, f1 in result["per_au_f1"].items():
            accuracy = result.get("per_au_accuracy", {}).get(au)
            lines.append(f"| AU{au} | {AU_NAMES.get(int(au), '')} | {_fmt(f1)} | {_fmt(accuracy)} |")
        if result.get("undefined_aus"):
            left_out = ", ".join(f"AU{au}" for au in result["undefined_aus"])
            lines += ["", f"Left out of the mean (undefined F1): {left_out}"]
    else:
        lines += [f"Accuracy: {_fmt(result['accuracy'])}; {_no_keyword_text(result)}; parser fallbacks (the "
                  f"official parser would crash): {result.get('num_parser_fallbacks', 0)}", "",
                  "Confusion matrix (rows: label, columns: prediction; answers without a keyword are "
                  + ("in the Happiness column):" if result.get("mode") == "paper" else "left out):"), "",
                  "| label \\ pred | " + " | ".join(EMOTIONS) + " |", "|---|" + "---:|" * len(EMOTIONS)]  # fmt: skip
        for name, row in zip(EMOTIONS, result["confusion_matrix"]):
            lines.append(f"| {name} | " + " | ".join(str(count) for count in row) + " |")
    if result.get("skipped"):
        lines += ["", f"Skipped {len(result['skipped'])} unreadable sample(s):", ""]
        lines += [f"- {item.get('line', item.get('id'))}: {item['error']}" for item in result["skipped"]]
    return "\n".join(lines) + "\n"


def _num_no_keyword(result: dict) -> int:
    """Emotion answers without an emotion keyword (results scored before `num_no_keyword` existed: `num_unparsed`)."""
    return result.get("num_no_keyword", result.get("num_unparsed", 0))


def _no_keyword_text(result: dict) -> str:
    """How many emotion answers named no emotion, and what the mode made of them (the score alone hides it)."""
    count = _num_no_keyword(result)
    fate = "scored as happiness, the official default" if result.get("mode") == "paper" else "counted wrong"
    return f"answers without an emotion keyword: {count} of {result['num_samples']} ({fate})"


def _plot(result: dict, task: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(report_figure(result, task)).print_png(str(path))


def report_figure(result: dict, task: str):
    """The report's plot as a matplotlib `Figure`: per-AU F1 bars (left-out AUs drawn as "n/a") or the emotion
    confusion matrix (its title names the scoring mode and the answers without a keyword)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError('Report plots need matplotlib: pip install "transformers-emola[eval]"') from error
    # Figure (drawn on an Agg canvas by the caller) directly: no pyplot, so the caller's backend is left alone.
    mode = result.get("mode", "?")
    if task == "au":
        from matplotlib.patches import Patch

        aus = list(result["per_au_f1"])
        left_out = [au for au in aus if result["per_au_f1"][au] is None]
        figure = Figure(figsize=(max(6.0, 0.5 * len(aus) + 2), 4))
        axes = figure.add_subplot()
        names = [f"AU{au}" for au in aus]
        # a left-out AU has no F1 (no positive anywhere, or one class only): a hatched placeholder, never a 0 bar
        axes.bar(names, [result["per_au_f1"][au] if au not in left_out else 0.0 for au in aus], color="tab:blue")
        handles = [Patch(color="tab:blue", label="F1")]
        if left_out:
            axes.bar([f"AU{au}" for au in left_out], [100.0] * len(left_out), color="none", edgecolor="gray",
                     hatch="//", linewidth=0.8)
            for au in left_out:
                axes.text(names.index(f"AU{au}"), 50, "n/a", ha="center", va="center", color="dimgray",
                          rotation=90, fontsize=9)
            handles.append(Patch(facecolor="none", edgecolor="gray", hatch="//", label="n/a: left out of S_re"))
        s_re = result["s_re"]
        if not math.isnan(s_re):
            handles.append(axes.axhline(s_re, color="tab:red", linestyle="--", label=f"S_re = {s_re:.1f}"))
        axes.legend(handles=handles, loc="upper right")
        axes.set_ylim(0, 100)
        axes.set_ylabel("F1 (%)")
        axes.set_title(f"Per-AU F1 ({mode} mode)")
        axes.tick_params(axis="x", rotation=45)
    else:
        from matplotlib.ticker import MaxNLocator

        matrix = result["confusion_matrix"]
        figure = Figure(figsize=(6.5, 5.5))
        axes = figure.add_subplot()
        peak = max((max(row) for row in matrix), default=0)
        image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=max(peak, 1))
        colorbar = figure.colorbar(image, ax=axes)
        colorbar.locator = MaxNLocator(integer=True)  # counts of answers: whole numbers
        colorbar.update_ticks()
        axes.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
        axes.set_yticks(range(len(EMOTIONS)), EMOTIONS)
        axes.set_xlabel("parsed prediction")
        axes.set_ylabel("label")
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axes.text(j, i, str(count), ha="center", va="center",
                          color="white" if peak and count > peak / 2 else "black")  # fmt: skip
        no_keyword = _num_no_keyword(result)
        note = " = happiness" if mode == "paper" else " counted wrong"
        axes.set_title(f"Emotion confusion matrix, {mode} mode\n(accuracy {result['accuracy']:.1f}%; "
                       f"{no_keyword} of {result['num_samples']} without keyword{note})")
    figure.tight_layout()
    return figure


def write_report(result: dict, out_dir: str | Path, task: str, plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and a plot (per_au_f1.png or confusion_matrix.png) for a `compute_rege` result.

    Args:
        result: the dict `compute_rege` / `score_predictions_file` returned.
        out_dir: created if needed.
        task: "au" or "emotion".
        plots: draw the PNG (needs matplotlib).

    Returns:
        {"json": path, "markdown": path, "plot": path (when drawn)}.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {list(TASKS)}.")
    required = ("s_re", "s_ge", "s_rege", "num_samples") + (("per_au_f1",) if task == "au" else ("confusion_matrix",))
    missing = [key for key in required if key not in result]
    if missing:
        raise ValueError(f"result is not a {task!r} REGE result: missing {missing}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(_json_safe(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(_markdown(result, task), encoding="utf-8")
    if plots:
        paths["plot"] = out_dir / ("per_au_f1.png" if task == "au" else "confusion_matrix.png")
        _plot(result, task, paths["plot"])
    return paths


def format_summary(result: dict, paths: dict[str, Path]) -> str:
    """The two lines `emola evaluate` prints: the scores and where the report went."""
    processes = ""
    if result.get("num_processes", 1) > 1:
        processes = (f"; generated by {result['num_processes']} processes: "
                     + "/".join(map(str, result["samples_per_process"])))
    return (f"REGE ({result['task']}, {result['mode']}): S_re {result['s_re']:.2f}  S_ge {result['s_ge']:.2f}  "
            f"S_rege {result['s_rege']:.2f}  ({result['num_samples']} samples{processes})\n"
            "report: " + ", ".join(str(p) for p in paths.values()))


@dataclass
class EvaluationReport:
    """What `evaluate_model` produced: the REGE result, the report files, the predictions and the failed samples."""

    result: dict
    paths: dict[str, Path]
    predictions_path: Path
    failures: list[dict] = field(default_factory=list)


def evaluate_model(
    model: str | os.PathLike,
    annotations: str | os.PathLike,
    data_root: str | os.PathLike,
    task: str,
    out_dir: str | os.PathLike,
    *,
    mode: str = "paper",
    au_set: str = "faba",
    batch_size: int = 8,
    max_new_tokens: int = 512,
    limit: int | None = None,
    plots: bool = True,
    progress: bool = True,
    launch: Launch = Launch(),
) -> EvaluationReport | None:
    """Generate answers for FABA-Bench with the checkpoint `model`, score them with REGE and write the report.

    Generation resumes from `out_dir/predictions.jsonl`; samples that cannot be read are listed in
    `out_dir/failures.json` and in the returned report (everything else is still scored). Runs on the GPU in
    float16 when there is one. With `launch=Launch.detect()` in every process of a `torchrun` / `accelerate launch`,
    each process generates its share on its own device, and the main process merges, scores and writes the report
    (with `num_processes` and `samples_per_process`) and returns it; the other processes return None.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .inference import faba_bench_job

    device = torch.device(launch.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = AutoModelForImageTextToText.from_pretrained(
        model, dtype=torch.float16 if device.type == "cuda" else torch.float32).to(device).eval()
    processor = AutoProcessor.from_pretrained(model)
    job = faba_bench_job(
        loaded, processor, annotations, data_root, task, out_dir, batch_size=batch_size,
        max_new_tokens=max_new_tokens, limit=limit, progress=progress, launch=launch,
    )
    if job is None:  # another process of the launch: the main one scores
        return None
    result = score_predictions_file(job.log_path, task, mode, au_set)
    result.update(num_processes=job.num_processes, samples_per_process=job.samples_per_process)
    paths = write_report(result, out_dir, task, plots=plots)
    return EvaluationReport(result, paths, job.log_path, job.failures)


def score_traditional(protocol: str, files: list[str | Path], au_set: str = "disfa", mode: str = "paper") -> dict:
    """Traditional FABA protocols from predictions.jsonl files (`prediction` and `label` per line).

    - `"fer"`: RAF-DB / AffectNet 7-class accuracy over all files together (one emotion word per answer).
    - `"au_folds"`: DISFA / BP4D / GFT per-AU F1, one file per cross-validation fold, averaged over the folds.
    """
    tables = [read_predictions(path)[0] for path in files]
    if protocol == "fer":
        records = [record for table in tables for record in table]
        return compute_fer_accuracy([r["prediction"] for r in records], [r["label"] for r in records], mode=mode)
    if protocol == "au_folds":
        return compute_au_f1_folds([[r["prediction"] for r in table] for table in tables],
                                   [[r["label"] for r in table] for table in tables], au_set, mode=mode)
    raise ValueError(f"protocol must be 'fer' or 'au_folds', got {protocol!r}")
