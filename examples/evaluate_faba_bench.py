"""Evaluate an EmoLA checkpoint on FABA-Bench (REGE), TRL-style: dataclass arguments, `TrlParser`, an optional YAML.

    python examples/evaluate_faba_bench.py --model path/to/emola-7b-au \
        --annotations data/FABAInstruct/eval/eval_au_anno.json --data_root data --task au --out results/au

Batched greedy generation with the official questions; predictions.jsonl is appended as it goes, so a killed run
resumes where it stopped; then report.json, report.md and a plot. Same engine as `emola evaluate`, data-parallel the
same way under `torchrun --nproc-per-node N` or `accelerate launch` (docs/scale_out.md).
"""

from dataclasses import dataclass, field

from trl import TrlParser

from transformers_emola.evaluation import evaluate_model, format_summary
from transformers_emola.jobs import Launch


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "EmoLA checkpoint folder or Hub id"})
    annotations: str = field(metadata={"help": "FABA-Bench eval annotations (eval_au_anno.json / eval_emotion_anno.json)"})
    data_root: str = field(metadata={"help": "folder the annotation image / landmark paths are relative to"})
    task: str = field(metadata={"help": "au or emotion", "choices": ["au", "emotion"]})
    out: str = field(default="results", metadata={"help": "output folder"})
    mode: str = field(default="paper", metadata={"help": "paper (official) or strict", "choices": ["paper", "strict"]})
    au_set: str = field(default="faba", metadata={"help": "faba, disfa, bp4d, gft or emotionet"})
    batch_size: int = field(default=8, metadata={"help": "generation batch size"})
    max_new_tokens: int = field(default=512, metadata={"help": "longest answer"})
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first N samples"})
    no_plots: bool = field(default=False, metadata={"help": "skip the PNG plot"})


def main(argv: list[str] | None = None) -> int:
    (args,) = TrlParser((EvaluateArguments,)).parse_args_and_config(args=argv)
    report = evaluate_model(args.model, args.annotations, args.data_root, args.task, args.out, mode=args.mode,
                            au_set=args.au_set, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                            limit=args.limit, plots=not args.no_plots, launch=Launch.detect())
    if report is None:  # another process of a torchrun / accelerate launch: rank 0 merges, scores and reports
        return 0
    print(format_summary(report.result, report.paths))
    for failure in report.failures:
        print(f"failed: {failure['id']}: {failure['error']}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
