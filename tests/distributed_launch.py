"""What `tests/test_distributed.py` runs under `torchrun`: `emola` commands or a script, with optional instruments.

    torchrun --standalone --nproc-per-node 2 tests/distributed_launch.py [--trace DIR] [--kill-rank R --kill-after K]
        [--script PATH] -- ARGS [-- ARGS ...]

Without --script, each `-- ARGS` group is one `emola` command, run in turn as `python -m transformers_emola.cli ARGS`
would run it; with --script, the one group is the script's command line. Instruments (test-only, patched in here so
the library carries no test hooks):

- `--trace DIR`: each rank appends to `DIR/rank<R>.jsonl` the keys of the rows every job log is given (what was
  finished, and by whom) and the `id`s of the samples every training batch holds.
- `--kill-rank R --kill-after K`: rank R kills itself with SIGKILL (no clean-up, like the OOM killer) right after
  its job log has received K rows.
"""

import argparse
import json
import os
import runpy
import signal
import sys


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", default=None)
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--script", default=None)
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    groups, current = [], []
    for word in argv[split + 1 :]:
        if word == "--":
            groups.append(current)
            current = []
        else:
            current.append(word)
    return args, groups + [current]


def instrument(args, rank: int) -> None:
    from transformers_emola import jobs
    from transformers_emola.training import collator

    def trace(record):
        if args.trace:
            with open(os.path.join(args.trace, f"rank{rank}.jsonl"), "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    written = []
    append_jsonl = jobs.append_jsonl

    def traced_append(path, rows):
        append_jsonl(path, rows)
        keys = [row.get("id", row.get("image")) for row in rows]
        trace({"log": os.path.basename(path), "keys": keys})
        written.extend(keys)
        if rank == args.kill_rank and len(written) >= args.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    jobs.append_jsonl = traced_append
    call = collator.EmolaDataCollator.__call__

    def traced_call(self, examples):
        trace({"batch": [example["id"] for example in examples]})
        return call(self, examples)

    collator.EmolaDataCollator.__call__ = traced_call


def main(argv):
    args, groups = parse(argv)
    instrument(args, int(os.environ.get("RANK", "0")))
    if args.script:
        sys.argv = [args.script, *groups[0]]
        runpy.run_path(args.script, run_name="__main__")
        return 0
    from transformers_emola.cli import main as emola

    codes = [emola(group) for group in groups]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
