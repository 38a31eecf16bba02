"""`emola demo`: the whole EmoLA workflow in one offline command.

Synthetic FABA-Instruct (faces rendered from action units, exact landmarks) -> a tiny EmoLA -> the TRL fine-tuning
recipe -> FABA-Bench REGE on held-out faces before and after training -> report.json, report.md and plots.

The embedded default is a toy: the tiny model starts from random weights, so it is fine-tuned in full (vision
tower frozen) instead of with LoRA on top of a pretrained LLM. Point `--model`, `--annotations` and `--data-root`
at a real EmoLA / LLaVA checkpoint and FABA-Instruct to run the same stages on real data (LoRA, as the paper).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
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
    num_train: int = field(default=200, metadata={"help": "synthetic training faces per task"})
    num_eval: int = field(default=24, metadata={"help": "held-out synthetic faces per task"})
    image_size: int = field(default=56, metadata={"help": "synthetic image side and tiny CLIP input size, pixels"})
    epochs: float = field(default=5.0, metadata={"help": "training epochs"})
    batch_size: int = field(default=8, metadata={"help": "training and generation batch size"})
    learning_rate: float = field(default=2e-3, metadata={"help": "learning rate (the multimodal projector's too)"})
    prior_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the facial-prior projector (default: --learning-rate)"})
    hidden_size: int = field(default=64, metadata={"help": "tiny model: width of the language model"})
    num_hidden_layers: int = field(default=2, metadata={"help": "tiny model: depth of the language model"})
    max_new_tokens: int = field(default=120, metadata={"help": "longest generated answer when evaluating"})
    use_facial_prior: bool = field(default=True, metadata={
        "help": "train the LLaVA baseline without the facial prior token (the ablation)"})
    evaluate_before: bool = field(default=True, metadata={"help": "skip the REGE evaluation before training"})
    seed: int = field(default=0, metadata={"help": "seed of the data, the tiny model and training"})
    num_threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (default: torch's choice; 1 is fastest for the tiny model on a busy machine)"})
    progress: bool = field(default=True, metadata={"help": "hide the progress bars"})


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


def _evaluate(model, processor, paths, data_root, tasks, out_dir: Path, args: DemoArguments) -> dict:
    from .evaluation import score_predictions_file, write_report
    from .inference import predict_faba_bench

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
        write_report(result["paper"], task_dir, task)
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


def format_table(before: dict | None, after: dict, tasks) -> str:
    """The before/after REGE table (paper mode, with strict mode's S_re beside it)."""
    lines = [
        "| task | stage | S_re | S_ge | S_rege | strict S_re |",
        "|---|---|---:|---:|---:|---:|",
    ]
    stages = [("before", before), ("after", after)] if before is not None else [("after", after)]
    for task in tasks:
        for stage, results in stages:
            paper, strict = results[task]["paper"], results[task]["strict"]
            lines.append(f"| {task} | {stage} | {paper['s_re']:.1f} | {paper['s_ge']:.1f} | "
                         f"{paper['s_rege']:.1f} | {strict['s_re']:.1f} |")
    return "\n".join(lines)


def _tiny_model(args: DemoArguments, train_file: Path, data_root: Path):
    """The demo's tiny random EmoLA: its tokenizer learns the training answers' vocabulary."""
    from .data import assistant_answers, load_faba_instruct
    from .tiny import build_tiny_emola

    train_rows = load_faba_instruct(train_file, image_root=data_root, split="train",
                                    use_facial_prior=args.use_facial_prior)
    return build_tiny_emola(texts=assistant_answers(train_rows), vocab_size=600, hidden_size=args.hidden_size,
                            num_hidden_layers=args.num_hidden_layers, image_size=args.image_size,
                            facial_prior_backend="synthetic", use_facial_prior=args.use_facial_prior, seed=args.seed)


def run_demo(args: DemoArguments) -> dict:
    """Run every stage and write `args.out/report.json`, `report.md`, `loss.png` and per-task reports/plots."""
    import torch
    from trl import ModelConfig

    from .training import EmolaScriptArguments, EmolaSFTConfig, load_model_and_processor, train_emola

    unknown = set(args.tasks) - set(TASKS)
    if unknown or not args.tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {args.tasks}")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
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

    # 2-3. the starting model and its REGE
    tiny = args.model == "tiny"
    backend = "synthetic" if tiny else "insightface_2d106"
    before = None
    mark = time.perf_counter()
    if args.evaluate_before:
        if tiny:
            model, processor = _tiny_model(args, train_file, data_root)
        else:
            model, processor = load_model_and_processor(args.model, use_facial_prior=args.use_facial_prior,
                                                        facial_prior_backend=backend)
        before = _evaluate(model, processor, paths, data_root, args.tasks, out / "before", args)
        del model
    timings["evaluate_before_s"] = time.perf_counter() - mark

    # 4. fine-tune with the TRL recipe
    mark = time.perf_counter()
    script_args = EmolaScriptArguments(
        train_annotations=str(train_file), image_root=str(data_root), use_facial_prior=args.use_facial_prior,
        facial_prior_backend=backend, merge=True, merged_output_dir=str(out / "model"), num_threads=args.num_threads,
    )
    training_args = EmolaSFTConfig(
        output_dir=str(out / "checkpoints"), use_cpu=not torch.cuda.is_available(), bf16=False, report_to=[],
        num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, mm_projector_lr=args.learning_rate,
        facial_prior_projector_lr=args.prior_learning_rate, logging_steps=5, save_strategy="no",
        seed=args.seed, dataloader_num_workers=0, disable_tqdm=not args.progress, max_length=None,
        activation_checkpointing=not tiny,  # memory is no issue for the tiny model; speed is
    )
    if tiny:
        # the tiny LM is random: train it in full (the recipe's trainer without LoRA)
        model, processor = _tiny_model(args, train_file, data_root)
        summary = train_emola(script_args, training_args, ModelConfig(use_peft=False), model=model.train(),
                              processor=processor)
    else:
        # a real LLM gets EmoLA's LoRA (r=128, alpha=256)
        model_args = ModelConfig(model_name_or_path=args.model, use_peft=True, lora_r=128, lora_alpha=256,
                                 lora_dropout=0.05)
        summary = train_emola(script_args, training_args, model_args)
    log_history = summary["trainer"].state.log_history
    timings["train_s"] = time.perf_counter() - mark

    # 5. REGE after training, on the merged checkpoint as a user would load it
    from transformers import AutoModelForImageTextToText, AutoProcessor

    mark = time.perf_counter()
    trained = AutoModelForImageTextToText.from_pretrained(summary["merged_dir"]).eval()
    trained_processor = AutoProcessor.from_pretrained(summary["merged_dir"])
    trained_processor.pad_to_square = False  # evaluate as the official FABA-Bench script does
    after = _evaluate(trained, trained_processor, paths, data_root, args.tasks, out / "after", args)
    timings["evaluate_after_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started

    # 6. report
    table = format_table(before, after, args.tasks)
    loss_plot = _loss_plot(log_history, out / "loss.png")
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    report = {
        "arguments": asdict(args),
        "before": before,
        "after": after,
        "training": {"steps": summary["global_step"], "first_loss": losses[0] if losses else None,
                     "last_loss": losses[-1] if losses else None, "losses": losses,
                     "samples_per_second": summary["train_samples_per_second"],
                     "peak_memory_bytes": summary["peak_memory_bytes"]},
        "model_dir": str(summary["merged_dir"]),
        "timings": timings,
        "plots": [str(p) for p in [loss_plot, *sorted(out.glob("*/*/*.png"))] if p is not None],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(f"# EmoLA demo\n\n{table}\n", encoding="utf-8")
    report["table"] = table
    return report
