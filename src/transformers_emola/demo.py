"""`emola demo`: the whole EmoLA workflow in one offline command.

Synthetic FABA-Instruct (faces rendered from action units, exact landmarks) -> a tiny EmoLA -> the TRL fine-tuning
recipe -> FABA-Bench REGE on held-out faces before and after training -> report.json, report.md and plots.

The embedded default is a toy: the tiny model starts from random weights, so it is fine-tuned in full (vision
tower frozen) instead of with LoRA on top of a pretrained LLM. Point `--model`, `--annotations` and `--data-root`
at a real EmoLA / LLaVA checkpoint and FABA-Instruct to run the same stages on real data (LoRA, as the paper).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .faba import TASKS


@dataclass
class DemoArguments:
    """Options of `emola demo` (defaults: the offline toy that finishes in a few minutes on 2 CPU cores)."""

    out: str = field(default="emola_demo", metadata={"help": "output folder: report.json, report.md, plots, model"})
    model: str = field(default="tiny", metadata={
        "help": "'tiny' (a random tiny EmoLA built offline) or an EmoLA / HF LLaVA-1.5 checkpoint (LoRA recipe)"})
    annotations: str | None = field(default=None, metadata={
        "help": "FABA-Instruct folder with {train,eval}_{task}_anno.json (default: none, synthetic data)"})
    data_root: str | None = field(default=None, metadata={
        "help": "folder the image and landmark paths of --annotations are relative to (default: none)"})
    tasks: tuple[str, ...] = field(default=TASKS, metadata={"help": "tasks to train and evaluate", "choices": TASKS})
    num_train: int = field(default=400, metadata={"help": "synthetic training faces per task"})
    num_eval: int = field(default=60, metadata={"help": "held-out synthetic faces per task"})
    image_size: int = field(default=56, metadata={"help": "synthetic image side and tiny CLIP input size, pixels"})
    epochs: float = field(default=10.0, metadata={"help": "training epochs"})
    batch_size: int = field(default=8, metadata={"help": "training and generation batch size"})
    learning_rate: float = field(default=3e-3, metadata={"help": "learning rate (the multimodal projector's too)"})
    prior_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the facial-prior projector (default: --learning-rate)"})
    facial_prior_normalization: str = field(default="standardize", metadata={
        "help": "standardize: the model standardises each prior with the training priors' mean and std (stored in "
                "its config); none: raw landmark vectors, as the released EmoLA checkpoints take them",
        "choices": ["standardize", "none"]})
    vocab_size: int = field(default=1000, metadata={
        "help": "tiny model: tokens its tokenizer learns from the training texts (at 1000 every word and AU number "
                "of the synthetic answers is one token; at 600 'AU15' was two)"})
    hidden_size: int = field(default=96, metadata={"help": "tiny model: width of the language model"})
    num_hidden_layers: int = field(default=1, metadata={
        "help": "tiny model: depth of the language model (one layer learns to read the prior token soonest)"})
    max_new_tokens: int = field(default=120, metadata={"help": "longest generated answer when evaluating"})
    use_facial_prior: bool = field(default=True, metadata={
        "help": "train the LLaVA baseline without the facial prior token (the ablation)"})
    ablation: bool = field(default=False, metadata={
        "help": "also train, with the same data and budget, a model whose prior token carries another face's "
                "landmarks (shuffled) and the LLaVA baseline without the prior token (no_prior), and compare"})
    evaluate_before: bool = field(default=True, metadata={"help": "skip the REGE evaluation before training"})
    seed: int = field(default=0, metadata={"help": "seed of the data, the tiny model and training"})
    num_threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (default: torch's choice; 1 per run when runs go in parallel)"})
    workers: int | None = field(default=None, metadata={
        "help": "runs (evaluation before training, each trained variant) at once, one process each (default: all "
                "of them for the tiny model, one thread each; 1 for a checkpoint: everything in this process)"})
    progress: bool = field(default=True, metadata={"help": "hide the progress bars"})


VARIANTS = ("prior", "shuffled", "no_prior")


def _synthetic_data(args: DemoArguments, root: Path) -> dict[str, Path]:
    from .synthetic import write_synthetic_faba

    return write_synthetic_faba(root, num_train=args.num_train, num_eval=args.num_eval, seed=args.seed,
                                image_size=args.image_size, tasks=tuple(args.tasks), progress=args.progress)


def _real_data(args: DemoArguments) -> tuple[dict[str, Path], Path]:
    from .data import resolve_annotation_file

    if args.data_root is None:
        raise ValueError("--annotations needs --data-root (the folder the image and landmark paths are relative to)")
    paths = {}
    for task in args.tasks:
        for split in ("train", "eval"):
            paths[f"{split}_{task}"] = resolve_annotation_file(args.annotations, split, task)
    return paths, Path(args.data_root)


def _combined_training_file(paths: dict[str, Path], tasks, out: Path) -> Path:
    """One training file for all tasks (the demo trains one model; the paper trains one per task)."""
    rows = []
    for task in tasks:
        rows.extend(json.loads(paths[f"train_{task}"].read_text(encoding="utf-8")))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows), encoding="utf-8")
    return out


def shuffled_annotations(paths: dict[str, Path], tasks, destination: Path, seed: int) -> dict[str, Path]:
    """Copies of the annotation files with the `landmark` fields permuted within each file.

    The prior token then carries another face's landmarks: the same distribution, no information about this face
    (the ablation's `shuffled` variant). Returns the new `{split}_{task}` paths.
    """
    rng = random.Random(seed)
    shuffled = {}
    for task in tasks:
        for split in ("train", "eval"):
            rows = json.loads(paths[f"{split}_{task}"].read_text(encoding="utf-8"))
            landmarks = [row["landmark"] for row in rows]
            rng.shuffle(landmarks)
            for row, landmark in zip(rows, landmarks):
                row["landmark"] = landmark
            target = destination / "FABAInstruct" / split / f"{split}_{task}_anno.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(rows), encoding="utf-8")
            shuffled[f"{split}_{task}"] = target
    return shuffled


def _evaluate(model, processor, paths, data_root, tasks, out_dir: Path, args: DemoArguments) -> dict:
    from .evaluation import score_predictions_file, write_report
    from .inference import predict_faba_bench
    from .jobs import read_jsonl

    results = {}
    for task in tasks:
        task_dir = out_dir / task
        predictions, failures = predict_faba_bench(
            model, processor, paths[f"eval_{task}"], data_root, task, task_dir,
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=args.progress,
        )
        if failures:
            raise RuntimeError(f"{len(failures)} evaluation samples failed; see {task_dir / 'failures.json'}")
        result = {"paper": score_predictions_file(predictions, task=task, mode="paper"),
                  "strict": score_predictions_file(predictions, task=task, mode="strict")}
        answers = [row["prediction"] for row in read_jsonl(predictions)]
        for mode in result:  # how many faces got an answer of their own (a constant answer recognises nothing)
            result[mode]["num_distinct_answers"] = len(set(answers))
        write_report(result["paper"], task_dir, task)  # the official scoring, where FABA-Bench tools look
        write_report(result["strict"], task_dir / "strict", task)
        results[task] = result
    return results


def _loss_plot(log_history: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    if not points:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(*zip(*points), marker="o", markersize=3)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title("EmoLA demo: fine-tuning loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _misses(result: dict, task: str) -> str:
    """What the recognition score hides: emotion answers without an emotion keyword (paper mode scores them as
    happiness, strict mode as wrong); AUs left out of the mean (undefined F1)."""
    if task == "emotion":
        return f"{result['num_no_keyword']}/{result['num_samples']} no keyword"  # both modes count them
    return f"{len(result.get('undefined_aus', []))} AUs left out"


def format_table(before: dict | None, after: dict, tasks) -> str:
    """The before/after REGE table: paper mode (with what its score hides) and strict mode's S_re."""
    lines = [
        "| task | stage | S_re | S_ge | S_rege | paper: missed | strict S_re | strict: missed | distinct answers |",
        "|---|---|---:|---:|---:|---|---:|---|---:|",
    ]
    stages = [("before", before), ("after", after)] if before is not None else [("after", after)]
    for task in tasks:
        for stage, results in stages:
            paper, strict = results[task]["paper"], results[task]["strict"]
            distinct = paper.get("num_distinct_answers")
            distinct = "-" if distinct is None else f"{distinct}/{paper['num_samples']}"
            lines.append(f"| {task} | {stage} | {paper['s_re']:.1f} | {paper['s_ge']:.1f} | {paper['s_rege']:.1f} | "
                         f"{_misses(paper, task)} | {strict['s_re']:.1f} | {_misses(strict, task)} | {distinct} |")
    return "\n".join(lines)


def format_ablation_table(after: dict, ablation: dict, tasks) -> str:
    """One table for the three variants: strict and paper S_re, S_ge, and the gap to the prior (strict S_re)."""
    lines = ["| task | variant | strict S_re | paper S_re | S_ge | strict S_re vs prior | strict: missed |",
             "|---|---|---:|---:|---:|---:|---|"]
    variants = {"prior": after, **ablation}
    for task in tasks:
        reference = after[task]["strict"]["s_re"]
        for variant, results in variants.items():
            strict, paper = results[task]["strict"], results[task]["paper"]
            gap = "—" if variant == "prior" else f"{strict['s_re'] - reference:+.1f}"
            lines.append(f"| {task} | {variant} | {strict['s_re']:.1f} | {paper['s_re']:.1f} | {paper['s_ge']:.1f} | "
                         f"{gap} | {_misses(strict, task)} |")
    return "\n".join(lines)


def _tokenizer_corpus(train_rows) -> list[str]:
    """Every text the tiny LM reads, with its frequency: answers, questions and the system prompt.

    Trained on the answers alone, the tiny BPE spells the system prompt and the questions letter by letter (~90
    tokens of noise in front of the question), and the question that tells the tasks apart is hard to read.
    """
    texts = []
    for messages in train_rows["messages"]:
        for message in messages:
            content = message["content"]
            items = content if isinstance(content, list) else [{"type": "text", "text": content}]
            texts.extend(item["text"] for item in items if item.get("type") == "text" and item.get("text"))
    return texts


def _tiny_model(args: DemoArguments, train_file: Path, data_root: Path, use_facial_prior: bool):
    """The demo's tiny random EmoLA: its tokenizer learns the training conversations' vocabulary."""
    from .data import load_faba_instruct
    from .faba import VICUNA_V1_SYSTEM_PROMPT
    from .tiny import build_tiny_emola

    train_rows = load_faba_instruct(train_file, image_root=data_root, split="train", use_facial_prior=False,
                                    system_prompt=VICUNA_V1_SYSTEM_PROMPT)
    return build_tiny_emola(texts=_tokenizer_corpus(train_rows), vocab_size=args.vocab_size,
                            hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
                            image_size=args.image_size, facial_prior_backend="synthetic",
                            use_facial_prior=use_facial_prior, seed=args.seed)


def _evaluate_untrained(args: DemoArguments, paths, data_root: Path, train_file: Path, out: Path) -> dict:
    """REGE of the starting model (the tiny random one, or the checkpoint given), before any training."""
    from .training import load_model_and_processor

    _set_threads(args)
    if args.model == "tiny":
        model, processor = _tiny_model(args, train_file, data_root, args.use_facial_prior)
    else:
        model, processor = load_model_and_processor(args.model, use_facial_prior=args.use_facial_prior,
                                                    facial_prior_backend="insightface_2d106")
    return _evaluate(model, processor, paths, data_root, args.tasks, out / "before", args)


def _train_and_evaluate(args: DemoArguments, variant: str, paths, data_root: Path, train_file: Path,
                        out: Path) -> dict:
    """Fine-tune one variant with the TRL recipe and score its merged checkpoint on the held-out faces."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import ModelConfig

    from .training import EmolaScriptArguments, EmolaSFTConfig, train_emola

    _set_threads(args)
    started = time.perf_counter()
    tiny = args.model == "tiny"
    use_prior = args.use_facial_prior and variant != "no_prior"
    backend = "synthetic" if tiny else "insightface_2d106"
    script_args = EmolaScriptArguments(
        train_annotations=str(train_file), image_root=str(data_root), use_facial_prior=use_prior,
        facial_prior_backend=backend, facial_prior_normalization=args.facial_prior_normalization,
        merge=True, merged_output_dir=str(out / "model"), num_threads=args.num_threads,
    )
    training_args = EmolaSFTConfig(
        output_dir=str(out / "checkpoints"), use_cpu=not torch.cuda.is_available(), bf16=False, report_to=[],
        num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, mm_projector_lr=args.learning_rate,
        facial_prior_projector_lr=args.prior_learning_rate, logging_steps=5, logging_first_step=True,
        save_strategy="no", seed=args.seed, dataloader_num_workers=0, disable_tqdm=not args.progress, max_length=None,
        activation_checkpointing=not tiny,  # memory is no issue for the tiny model; speed is
    )
    name = f"emola-demo-{'tiny' if tiny else Path(args.model).name}" + ("" if variant == "prior" else f"-{variant}")
    if tiny:
        # the tiny LM is random: train it in full (the recipe's trainer without LoRA)
        model, processor = _tiny_model(args, train_file, data_root, use_prior)
        summary = train_emola(script_args, training_args, ModelConfig(use_peft=False), model=model.train(),
                              processor=processor, model_name=name)
    else:
        # a real LLM gets EmoLA's LoRA (r=128, alpha=256)
        model_args = ModelConfig(model_name_or_path=args.model, use_peft=True, lora_r=128, lora_alpha=256,
                                 lora_dropout=0.05)
        summary = train_emola(script_args, training_args, model_args, model_name=name)
    train_s = time.perf_counter() - started

    # REGE after training, on the merged checkpoint as a user would load it
    mark = time.perf_counter()
    trained = AutoModelForImageTextToText.from_pretrained(summary["merged_dir"]).eval()
    trained_processor = AutoProcessor.from_pretrained(summary["merged_dir"])
    trained_processor.pad_to_square = False  # evaluate as the official FABA-Bench script does
    after = _evaluate(trained, trained_processor, paths, data_root, args.tasks, out / "after", args)
    log_history = summary["trainer"].state.log_history
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    loss_plot = _loss_plot(log_history, out / "loss.png")
    return {
        "after": after,
        "training": {"steps": summary["global_step"], "first_loss": losses[0] if losses else None,
                     "last_loss": losses[-1] if losses else None, "losses": losses,
                     "samples_per_second": summary["train_samples_per_second"],
                     "peak_memory_bytes": summary["peak_memory_bytes"]},
        "model_dir": str(summary["merged_dir"]),
        "timings": {"train_s": train_s, "evaluate_after_s": time.perf_counter() - mark},
        "loss_plot": str(loss_plot) if loss_plot else None,
    }


def _set_threads(args: DemoArguments) -> None:
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory in the process instead of handing it back to the kernel.

    A tiny model's training step allocates and frees the same few-MB buffers hundreds of times; by default glibc
    returns them to the kernel (`munmap`, heap trimming) and the next step page-faults them in again, zeroed. On the
    2-core CPU machine that kernel work was a third of a demo training's time (150 steps: 24.5 s, 8.3 s of it system
    time; with these settings 16.7 s and 1.4 s, same results). Returns False where this is not glibc (nothing changes).
    The setting lasts as long as the process: the demo makes it in the worker processes it starts for the tiny
    model, never in the caller's (`--workers 1`).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's malloc.h
    settings = ((m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20), (m_mmap_threshold, 1 << 30))
    return all(mallopt(option, value) == 1 for option, value in settings)


def default_workers(args: DemoArguments, num_runs: int) -> int:
    """Processes for `num_runs` runs: `args.workers`, else all at once for the tiny model, else one.

    The tiny model's runs take one thread each, so equal-length trainings end together instead of in rounds of one
    per core (on 2 cores, 3 trainings took 2 rounds: 341 s for `--ablation`); a checkpoint's runs go one after
    another, as they would share one accelerator.
    """
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"workers must be at least 1, got {args.workers}")
        return args.workers
    return num_runs if args.model == "tiny" else 1


def _run(job: tuple) -> tuple[str, dict, float]:
    """One job of `run_demo` (in this process or a worker): ("before", ...) or (variant, ...)."""
    kind, call_args = job
    started = time.perf_counter()
    result = _evaluate_untrained(*call_args) if kind == "before" else _train_and_evaluate(*call_args)
    return kind, result, time.perf_counter() - started


def _run_jobs(jobs: list[tuple], workers: int, tiny: bool) -> dict[str, tuple[dict, float]]:
    if workers <= 1:
        return {kind: (result, seconds) for kind, result, seconds in map(_run, jobs)}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (torch does not like fork after its threads started)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=keep_freed_memory if tiny else None) as pool:
        return {kind: (result, seconds) for kind, result, seconds in pool.map(_run, jobs)}


def run_demo(args: DemoArguments) -> dict:
    """Run every stage and write `args.out/report.json`, `report.md`, `loss.png` and per-task reports/plots.

    With `args.ablation`, the `shuffled` and `no_prior` variants are trained on the same data with the same budget
    (in `args.out/ablation/<variant>`) and `report["ablation"][variant][task][mode]` holds their scores.
    """
    unknown = set(args.tasks) - set(TASKS)
    if unknown or not args.tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {args.tasks}")
    if args.ablation and not args.use_facial_prior:
        raise ValueError("--ablation compares the facial prior with its absence: it needs use_facial_prior")
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    # 1. data
    if args.annotations is None:
        paths = _synthetic_data(args, out / "data")
        data_root = paths["root"]
    else:
        paths, data_root = _real_data(args)
    train_file = _combined_training_file(paths, args.tasks, out / "train_all_anno.json")
    timings["data_s"] = time.perf_counter() - started

    # 2. the runs: the trained variants and the evaluation of the starting model, in parallel when cores allow
    variants = VARIANTS if args.ablation else ("prior",)
    jobs = []
    for variant in variants:
        variant_out = out if variant == "prior" else out / "ablation" / variant
        variant_paths, variant_train_file = paths, train_file
        if variant == "shuffled":
            variant_paths = shuffled_annotations(paths, args.tasks, variant_out / "annotations", args.seed)
            variant_train_file = _combined_training_file(variant_paths, args.tasks, variant_out / "train_all_anno.json")
        jobs.append((variant, (args, variant, variant_paths, data_root, variant_train_file, variant_out)))
    if args.evaluate_before:
        jobs.append(("before", (args, paths, data_root, train_file, out)))
    workers = default_workers(args, len(jobs))
    if workers > 1:  # one thread per process, and no interleaved progress bars
        args = replace(args, num_threads=args.num_threads or 1, progress=False)
        jobs = [(kind, (args, *call_args[1:])) for kind, call_args in jobs]
    done = _run_jobs(jobs, workers, tiny=args.model == "tiny")
    prior = done["prior"][0]
    before = done["before"][0] if "before" in done else None
    timings.update({"evaluate_before_s": done["before"][1] if "before" in done else 0.0, **prior["timings"],
                    "runs_s": time.perf_counter() - started - timings["data_s"], "workers": workers})
    ablation = {variant: done[variant][0]["after"] for variant in variants if variant != "prior"}
    timings["total_s"] = time.perf_counter() - started

    # 3. report
    table = format_table(before, prior["after"], args.tasks)
    markdown = f"# EmoLA demo\n\n{table}\n"
    if ablation:
        ablation_table = format_ablation_table(prior["after"], ablation, args.tasks)
        markdown += ("\n## Ablation: the same budget without the landmarks\n\n"
                     "`shuffled`: the prior token carries another face's landmarks; `no_prior`: the LLaVA baseline "
                     f"without the prior token.\n\n{ablation_table}\n")
        table += "\n\n" + ablation_table
    report = {
        "arguments": asdict(args),
        "before": before,
        "after": prior["after"],
        "ablation": ablation or None,
        "ablation_training": {variant: done[variant][0]["training"] for variant in ablation} or None,
        "training": prior["training"],
        "model_dir": prior["model_dir"],
        "timings": timings,
        "plots": [str(path) for path in sorted(out.rglob("*.png")) if path.relative_to(out).parts[0] != "data"],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(markdown, encoding="utf-8")
    report["table"] = table
    return report
