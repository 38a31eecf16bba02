"""Scale-out: FABA-Bench evaluation throughput with 1 process against 2 (`torchrun`, gloo), 1 torch thread each.

Builds a small random EmoLA and a synthetic FABA-Bench AU set offline, then runs this script as a worker in fresh
processes: once alone (`python`), once as 2 ranks (`torchrun --standalone --nproc-per-node 2`). Each worker finds its
place with `jobs.Launch.detect()` (as `emola evaluate` does), loads the model, answers one warm-up face, waits for
the other rank, and then runs the evaluation job (`inference.faba_bench_job`: its shard, the wait for the other
rank, rank 0's merge); rank 0 times it from the common start to the merged `predictions.jsonl`. Start-up (imports,
model loading, joining the process group) is timed apart, as the whole command's wall time. Prints both side by
side with their ratio, and the load average before and after: on a shared machine, read the ratio with it.

    python benchmarks/bench_scale_out.py [--faces 64] [--max-new-tokens 32] [--batch-size 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path, faces: int, hidden_size: int) -> None:
    from transformers_emola import build_tiny_emola
    from transformers_emola.synthetic import write_synthetic_faba

    paths = write_synthetic_faba(root / "data", num_train=0, num_eval=faces, seed=0, image_size=64, tasks=["au"])
    answers = [row["gpt4"] for row in json.loads(Path(paths["eval_au"]).read_text())]
    model, processor = build_tiny_emola(texts=answers, hidden_size=hidden_size, num_hidden_layers=4, image_size=56)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    print(f"model: {model.num_parameters() / 1e6:.2f} M parameters (LM width {hidden_size}, 4 layers, 56 px CLIP)")


def worker(args) -> None:
    """One rank (or the only process): time the evaluation job, not the start-up."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import transformers_emola  # noqa: F401  (registers EmoLA)
    from transformers_emola.inference import faba_bench_job
    from transformers_emola.jobs import Launch

    torch.set_num_threads(1)
    root = Path(args.bench_worker)
    launch = Launch.detect()
    model = AutoModelForImageTextToText.from_pretrained(root / "model").eval()
    processor = AutoProcessor.from_pretrained(root / "model")
    annotations = json.loads((root / "data/FABAInstruct/eval/eval_au_anno.json").read_text())
    out = root / f"out-{launch.count}-{args.bench_run}"
    faba_bench_job(model, processor, annotations[:1], root / "data", "au", root / f"warm-{launch.index}",
                   max_new_tokens=args.max_new_tokens, progress=False)  # first-call costs, outside the timing
    launch.all_gather(None)  # start together
    start = time.perf_counter()
    job = faba_bench_job(model, processor, annotations, root / "data", "au", out, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, progress=False, launch=launch)
    elapsed = time.perf_counter() - start
    if job is not None:
        (out / "timing.json").write_text(json.dumps({"seconds": elapsed, "faces": len(annotations),
                                                     "samples_per_process": job.samples_per_process}))


def run(root: Path, processes: int, repeat: int, args) -> tuple[float, float]:
    """(job seconds, whole command seconds) of one run in fresh processes."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
                if processes > 1 else [sys.executable])
    command = [*launcher, __file__, "--bench-worker", str(root), "--bench-run", str(repeat), "--batch-size",
               str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    timing = json.loads((root / f"out-{processes}-{repeat}" / "timing.json").read_text())
    assert len(timing["samples_per_process"]) == processes, timing
    return timing["seconds"], wall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=128, help="width of the random language model")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind, alternating; the fastest counts")
    parser.add_argument("--bench-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bench-run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bench_worker:
        return worker(args)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, args.faces, args.hidden_size)
        runs = {1: [], 2: []}
        for repeat in range(args.repeats):
            for processes in (1, 2):
                runs[processes].append(run(root, processes, repeat, args))
        same = all((root / f"out-1-{r}/predictions.jsonl").read_bytes() == (root / f"out-2-{r}/predictions.jsonl")
                   .read_bytes() for r in range(args.repeats))
    load_after = os.getloadavg()

    job = {p: min(seconds for seconds, _ in runs[p]) for p in (1, 2)}
    wall = {p: min(seconds for _, seconds in runs[p]) for p in (1, 2)}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average "
          f"(1, 5, 15 min) before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)}")
    print(f"{args.faces} faces, batch {args.batch_size}, up to {args.max_new_tokens} new tokens, 1 torch thread per "
          f"process; best of {args.repeats}\n")
    print("| processes | evaluation job (s) | faces/s | whole command (s) |")
    print("|---:|---:|---:|---:|")
    for processes in (1, 2):
        print(f"| {processes} | {job[processes]:.1f} | {args.faces / job[processes]:.2f} | {wall[processes]:.1f} |")
    print(f"\n2 processes / 1 process: faces/s x{job[1] / job[2]:.2f} (evaluation job), x{wall[1] / wall[2]:.2f} "
          "(whole command, start-up included)")
    print(f"predictions identical: {same}")


if __name__ == "__main__":
    main()
