"""Scale-out: `emola evaluate --model` throughput with 1 process against 2 (`torchrun`, gloo), 1 torch thread each.

Builds a small random EmoLA and a synthetic FABA-Bench AU set offline, then times the real command line, each run
in fresh processes: `python -m transformers_emola.cli evaluate ...` and `torchrun --standalone --nproc-per-node 2
-m transformers_emola.cli evaluate ...`, each on a few faces (start-up: imports, model loading, process group) and
on many. The difference of the two wall times is the time the extra faces took, so the throughput printed is that
of generation, without the fixed start-up, which is printed apart. Prints both side by side and their ratio, with
the load average before and after (the machine may be shared: read the ratio with it).

    python benchmarks/bench_scale_out.py [--faces 64] [--few 4] [--max-new-tokens 32] [--batch-size 4] [--repeats 1]
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


def build(root: Path, faces: int, hidden_size: int) -> tuple[Path, Path]:
    from transformers_emola import build_tiny_emola
    from transformers_emola.synthetic import write_synthetic_faba

    paths = write_synthetic_faba(root / "data", num_train=0, num_eval=faces, seed=0, image_size=64, tasks=["au"])
    answers = [row["gpt4"] for row in json.loads(Path(paths["eval_au"]).read_text())]
    model, processor = build_tiny_emola(texts=answers, hidden_size=hidden_size, num_hidden_layers=4, image_size=56)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    print(f"model: {model.num_parameters() / 1e6:.2f} M parameters (LM width {hidden_size}, 4 layers, 56 px CLIP)")
    return root / "model", Path(paths["eval_au"])


def timed_run(processes: int, model: Path, annotations: Path, data_root: Path, out: Path, limit: int,
              args) -> float:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
                if processes > 1 else [sys.executable])
    command = [*launcher, "-m", "transformers_emola.cli", "evaluate", "--model", str(model), "--annotations",
               str(annotations), "--data-root", str(data_root), "--task", "au", "--out", str(out), "--limit",
               str(limit), "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
               "--no-plots"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    assert report["num_samples"] == limit and report["num_processes"] == processes, report
    return elapsed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=64, help="faces of the long run")
    parser.add_argument("--few", type=int, default=4, help="faces of the start-up run")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=128, help="width of the random language model")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each kind; the fastest counts")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, annotations = build(root, args.faces, args.hidden_size)
        times = {}
        for processes in (1, 2):
            for limit in (args.few, args.faces):
                runs = []
                for repeat in range(args.repeats):
                    out = root / f"out-{processes}-{limit}-{repeat}"
                    runs.append(timed_run(processes, model, annotations, root / "data", out, limit, args))
                times[processes, limit] = min(runs)
        same = ((root / f"out-1-{args.faces}-0" / "predictions.jsonl").read_bytes()
                == (root / f"out-2-{args.faces}-0" / "predictions.jsonl").read_bytes())
    load_after = os.getloadavg()

    extra = args.faces - args.few
    rates = {p: extra / (times[p, args.faces] - times[p, args.few]) for p in (1, 2)}
    print(f"\n{args.faces} faces, batch {args.batch_size}, up to {args.max_new_tokens} new tokens, 1 torch thread per "
          "process")
    print("| processes | start-up + {few} faces (s) | {faces} faces (s) | generation (faces/s) |".format(
        few=args.few, faces=args.faces))
    print("|---:|---:|---:|---:|")
    for processes in (1, 2):
        print(f"| {processes} | {times[processes, args.few]:.1f} | {times[processes, args.faces]:.1f} | "
              f"{rates[processes]:.2f} |")
    print(f"\n2 processes / 1 process: generation throughput x{rates[2] / rates[1]:.2f}, whole command "
          f"x{times[1, args.faces] / times[2, args.faces]:.2f} (wall time of 1 / wall time of 2)")
    print(f"predictions identical: {same}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")


if __name__ == "__main__":
    main()
