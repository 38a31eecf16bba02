"""One resumable batch runner behind `emola evaluate`, `emola analyze` and `emola extract-priors`.

A job is an ordered list of items (annotation rows, image files) and a function that turns a batch of them into
one result row each. `run_job` feeds the batches in input order and appends the rows to a JSON-lines log, flushed
and fsync'ed after every batch, so a kill loses at most the batch in flight; a restarted run reads the log and
skips the items already done. A failing item never stops the others: when a batch raises, its items are retried
one by one and only the item that still raises becomes a failure row (`{"status": "error", "error": ...}`); the
failures of the run are written to a `failures.json`. Errors that no item can escape (a missing package, missing
model weights) are `fatal` and stop the job at once.

Several processes: under `torchrun` or `accelerate launch`, `Launch.detect()` names this process's rank; with
`run_job(..., launch=launch)` each rank runs its `Shard` (every `count`-th item, from its `index`), appends to its
own part file (`predictions.part1of2.jsonl`) and resumes from it independently; then every rank reports to the
others (the one point where they wait), and rank 0 merges the part files into the job's own files, in input order
(failures too), and deletes them. A rank that raises reports its error instead, so the others stop with it rather
than wait; a rank that is killed outright is handled by the launcher, which stops the rest. A resumed run reads the
job's file and every part file left by an earlier run (of any process count), so no finished item is redone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

__all__ = [
    "DEFAULT_WAIT",
    "JobReport",
    "Launch",
    "LaunchError",
    "Shard",
    "append_jsonl",
    "atomic_file",
    "is_failure",
    "known_rows",
    "latest_rows",
    "merge_failures",
    "merge_logs",
    "part_files",
    "read_jsonl",
    "run_job",
    "truncate_partial_line",
    "write_json_atomic",
]

Item = TypeVar("Item")


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------
def read_jsonl(path: str | os.PathLike) -> list[dict]:
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
                break  # half-written final line from an interrupted run: that item is simply redone
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
    return rows


def truncate_partial_line(path: str | os.PathLike) -> None:
    """Cut a half-written last line (left by a kill mid-write) so the next append starts on a fresh line."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Append rows durably (flush + fsync), so a kill loses at most the batch being written."""
    with open(path, "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Write `path` through a temporary file beside it, flushed, fsync'ed and renamed into place at the end: the
    file is either the old one or the complete new one, even after a kill (no half-written result is ever read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON with `atomic_file`."""
    with atomic_file(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)


def is_failure(row: dict) -> bool:
    """A result row that records a failed item (its `status` is set and not "ok")."""
    return row.get("status", "ok") != "ok"


def latest_rows(rows: Sequence[dict], key_field: str) -> dict[str, dict]:
    """The last row of every key, in the order the keys were last written (a retried item keeps its newest row)."""
    latest: dict[str, dict] = {}
    for row in rows:
        latest.pop(row[key_field], None)
        latest[row[key_field]] = row
    return latest


# ---------------------------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """The part of a job one process runs: items `index`, `index + count`, ... and its own part files.

    The default, `Shard(0, 1)`, is the whole job in one process, writing the files under their own names.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not (isinstance(self.count, int) and self.count >= 1 and isinstance(self.index, int)
                and 0 <= self.index < self.count):
            raise ValueError(f"a shard needs 0 <= index < count, got index={self.index!r}, count={self.count!r}")

    def take(self, items: Sequence[Item]) -> list[Item]:
        """This shard's items, in input order (deterministic: the same items on every run)."""
        return list(items[self.index :: self.count])

    def part(self, path: str | os.PathLike) -> Path:
        """The file this shard writes in place of `path`: `path` itself for one process, else
        `<stem>.part<index>of<count><suffix>` beside it."""
        path = Path(path)
        if self.count == 1:
            return path
        return path.with_name(f"{path.stem}.part{self.index}of{self.count}{path.suffix}")


def part_files(path: str | os.PathLike) -> list[Path]:
    """Every part file of `path` (see `Shard.part`) in its folder, whatever process count wrote it, by name."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(path.stem)}\.part\d+of\d+{re.escape(path.suffix)}")
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def known_rows(path: str | os.PathLike, key_field: str) -> dict[str, dict]:
    """The latest row of every key in the log `path` and in its part files (a part, being newer, wins)."""
    latest: dict[str, dict] = {}
    for source in [Path(path), *part_files(path)]:
        for key, row in latest_rows(read_jsonl(source), key_field).items():
            latest.pop(key, None)
            latest[key] = row
    return latest


def merge_logs(path: str | os.PathLike, keys: Sequence[str], key_field: str) -> list[dict]:
    """The latest row of each of `keys` in the log `path` and its part files, in the order of `keys` (the job's
    input order); keys without a row are left out."""
    latest = known_rows(path, key_field)
    return [latest[key] for key in keys if key in latest]


def merge_failures(path: str | os.PathLike, keys: Sequence[str], key_field: str, count: int) -> list[dict]:
    """The failures of the `count` part files of `path` (a failures.json), in the order of `keys`."""
    failures: dict[str, dict] = {}
    for index in range(count):
        part = Shard(index, count).part(path)
        if part.exists():
            failures.update({row[key_field]: row for row in json.loads(part.read_text(encoding="utf-8"))})
    return [failures[key] for key in keys if key in failures]


def _fold_parts_into_log(path: Path, keys: Sequence[str], key_field: str) -> set[str]:
    """Rewrite the log `path` with its rows and its part files' (`keys` first, in order; rows of other keys, from
    an earlier run over other items, after them), then delete the parts; returns the keys the log now holds. The
    rewrite is atomic and comes first, so a kill in between leaves rows twice, never zero times."""
    parts = part_files(path)
    latest = known_rows(path, key_field)
    if not parts:
        return set(latest)
    ordered = [latest.pop(key) for key in keys if key in latest] + list(latest.values())
    with atomic_file(path, "w", encoding="utf-8") as handle:
        for row in ordered:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    for part in parts:
        part.unlink()
    return {row[key_field] for row in ordered}


# ---------------------------------------------------------------------------------------------------------------
# Launches (several processes)
# ---------------------------------------------------------------------------------------------------------------
#: How long the ranks of a launch wait for the slowest one. It is long because ranks may finish hours apart (a
#: resumed rank may have all its items done while another has a whole shard left); a rank that dies does not make
#: anyone wait this long (the launcher stops the others), nor does one that raises (it reports its error).
DEFAULT_WAIT = timedelta(hours=72)


class LaunchError(RuntimeError):
    """Another process of the launch failed, so the job's outputs were not merged (its part files are kept)."""


@dataclass(frozen=True)
class Launch:
    """The processes one job runs on, seen from one of them: this process alone (the default), or the ranks of a
    data-parallel launch (`torchrun`, `accelerate launch`), found by `Launch.detect()`.

    Attributes:
        index, count: this process's rank and the number of processes.
        device: the device this rank should use (each GPU rank its own); None: the caller's default.
    """

    index: int = 0
    count: int = 1
    device: str | None = None
    group: Any = field(default=None, repr=False, compare=False)  # the torch.distributed group ranks report on

    @classmethod
    def detect(cls, wait: timedelta = DEFAULT_WAIT) -> Launch:
        """This process's place in the launch, from `accelerate.PartialState` (which reads the variables `torchrun`,
        `accelerate launch` and MPI set, and joins the process group: NCCL on GPUs, gloo on CPUs). Ranks report to
        each other on a separate gloo group whose time-out is `wait`. Not launched: `Launch()`."""
        import torch
        from accelerate import PartialState

        # Like the Trainer's `PartialState(cpu=use_cpu)`: without cpu=True, accelerate sees no multi-CPU launch.
        accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, XPU, MPS, ...
        has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
        use_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
        state = PartialState(cpu=use_cpu or not has_accelerator)
        if state.num_processes == 1:
            return cls()
        import torch.distributed as dist

        group = dist.new_group(backend="gloo", timeout=wait)
        return cls(state.process_index, state.num_processes, str(state.device), group)

    @property
    def shard(self) -> Shard:
        return Shard(self.index, self.count)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that merges, scores and prints."""
        return self.index == 0

    def all_gather(self, value: Any) -> list:
        """Every rank's `value` (picklable), in rank order, on every rank; returns when all ranks have called it."""
        if self.count == 1:
            return [value]
        import torch.distributed as dist

        if self.group is None:
            raise RuntimeError(f"a Launch of {self.count} processes built by hand has no process group: use "
                               "Launch.detect() in each process of a torchrun / accelerate launch")
        values: list = [None] * self.count
        dist.all_gather_object(values, value, group=self.group)
        return values


# ---------------------------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class JobReport(Generic[Item]):
    """What `run_job` did: for the whole job on the main process of a launch, for its shard with `shard=`.

    Attributes:
        items: the items, in input order.
        done_keys: the keys of the items finished (successfully) in this run, in input order.
        skipped_keys: the keys of the items an earlier run had already finished.
        failures: the failure rows of this run, in input order.
        log_path, failures_path: the files written, or None.
        samples_per_process: how many items each process was given (one entry per process).
    """

    items: list[Item]
    done_keys: list[str] = field(default_factory=list)
    skipped_keys: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    log_path: Path | None = None
    failures_path: Path | None = None
    samples_per_process: list[int] = field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.done_keys)

    @property
    def skipped(self) -> int:
        return len(self.skipped_keys)

    @property
    def num_processes(self) -> int:
        return len(self.samples_per_process)

    @property
    def ok(self) -> bool:
        return not self.failures


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def run_job(
    items: Sequence[Item],
    process: Callable[[list[Item]], list[dict]],
    *,
    key: Callable[[Item], str],
    key_field: str,
    log_path: str | os.PathLike | None = None,
    failures_path: str | os.PathLike | None = None,
    batch_size: int = 8,
    is_done: Callable[[Item, dict | None], bool] | None = None,
    failure_row: Callable[[Item, BaseException], dict] | None = None,
    log_failures: bool = False,
    fatal: tuple[type[BaseException], ...] = (),
    progress: bool = True,
    description: str | None = None,
    unit: str = "item",
    launch: Launch = Launch(),
    shard: Shard | None = None,
) -> JobReport[Item] | None:
    """Run `process` over `items` in batches, resumably, and report what happened.

    Args:
        items: the job's inputs, in the order they are processed (and merged). Keys must be unique.
        process: a batch of items -> one row per item, in the same order. A row is a success unless
            `is_failure(row)`; it must hold `key_field`.
        key: the key of an item (the value of `key_field` in its rows).
        log_path: the JSON-lines log rows are appended to; None keeps no log (then `is_done` alone decides).
        failures_path: where this run's failures are written as a JSON list (rewritten at the end); None: nowhere.
        batch_size: items per `process` call.
        is_done: `(item, its latest logged row or None) -> bool`: already finished, skip it. Default: its
            latest row is a success.
        failure_row: the row recorded for an item whose processing raised. Default:
            `{key_field: key(item), "status": "error", "error": "<Type>: <message>"}`.
        log_failures: also append failure rows to the log (so the log describes every item tried).
        fatal: exception types that stop the job instead of failing an item (set-up errors).
        progress: show a progress bar (on the main process); `description` and `unit` label it.
        launch: the processes running this job (see `Launch`); each runs its shard, the main one merges.
        shard: instead of `launch`, run only this part of the job, into its part files, and merge nothing.

    Returns:
        The report of the whole job on the main process, None on the other processes of a launch; with `shard`,
        the report of that shard.

    Raises:
        LaunchError: on the main process, when another process raised (that process raises its own error).
    """
    items = list(items)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    keys = [key(item) for item in items]
    if len(set(keys)) != len(keys):
        seen, duplicates = set(), []
        for name in keys:
            if name in seen and name not in duplicates:
                duplicates.append(name)
            seen.add(name)
        raise ValueError(f"every item of a job needs its own {key_field!r}; repeated: {duplicates[:10]}")
    if failure_row is None:
        def failure_row(item, error):
            return {key_field: key(item), "status": "error", "error": _error_text(error)}
    if is_done is None:
        def is_done(item, row):
            return row is not None and not is_failure(row)
    run_part = partial(_run_part, items, process, key=key, key_field=key_field, log_path=log_path,
                       failures_path=failures_path, batch_size=batch_size, is_done=is_done, failure_row=failure_row,
                       log_failures=log_failures, fatal=fatal, unit=unit)
    if shard is not None:
        if launch.count > 1:
            raise ValueError("give run_job a launch or a shard, not both")
        return run_part(shard=shard, progress=progress, description=description)
    if launch.count > 1 and description:
        description = f"{description} [rank {launch.index}/{launch.count}]"
    error = None
    try:
        part = run_part(shard=launch.shard, progress=progress and launch.is_main, description=description)
        status = {"items": len(part.items), "done_keys": part.done_keys, "skipped_keys": part.skipped_keys,
                  "failures": part.failures, "error": None}
    except Exception as raised:  # noqa: BLE001  (reported to the other ranks, then raised again below)
        if launch.count == 1:
            raise
        error, status = raised, {"error": _error_text(raised)}
    statuses = launch.all_gather(status)  # every rank waits here for the others: the barrier
    failed = [f"process {index} of {launch.count}: {s['error']}" for index, s in enumerate(statuses) if s["error"]]
    if error is not None:
        raise error
    if failed:
        if launch.is_main:
            raise LaunchError("the job stopped because " + "; ".join(failed) + " (the finished items are kept in "
                              "the part files: launch the same command again to resume)")
        return None
    if not launch.is_main:
        return None
    return _merged_report(items, keys, key_field, statuses, log_path, failures_path)


def _merged_report(items, keys, key_field, statuses, log_path, failures_path) -> JobReport:
    """On the main process, after every rank finished: the job's files from the part files, and its report."""
    count = len(statuses)
    order = {name: index for index, name in enumerate(keys)}
    report = JobReport(items, samples_per_process=[s["items"] for s in statuses])
    report.done_keys = sorted((k for s in statuses for k in s["done_keys"]), key=order.__getitem__)
    report.skipped_keys = sorted((k for s in statuses for k in s["skipped_keys"]), key=order.__getitem__)
    if log_path is not None:
        report.log_path = Path(log_path)
        merged = _fold_parts_into_log(report.log_path, keys, key_field)
        missing = set(report.done_keys) - merged if count > 1 else set()
        if missing:  # the other ranks wrote their part files where rank 0 cannot see them
            raise LaunchError(f"{len(missing)} item(s) other processes finished are not in their part files of "
                              f"{report.log_path} (e.g. {sorted(missing)[:3]}): the output folder must be one "
                              "folder that every process (every node) sees")
    report.failures = sorted((row for s in statuses for row in s["failures"]),
                             key=lambda row: order[row[key_field]])
    if failures_path is not None:
        report.failures_path = Path(failures_path)
        if count > 1:
            write_json_atomic(report.failures_path, report.failures)
        for stale in part_files(report.failures_path):  # this launch's, merged above, and any an earlier one left
            stale.unlink()
    return report


def _run_part(
    items: list[Item], process, *, key, key_field, log_path, failures_path, batch_size, is_done, failure_row,
    log_failures, fatal, unit, shard: Shard, progress: bool, description: str | None,
) -> JobReport[Item]:
    """`run_job` on one shard, in this process: resume, run the pending batches, write the part files."""
    mine = shard.take(items)
    report: JobReport[Item] = JobReport(mine, samples_per_process=[len(mine)])
    latest: dict[str, dict] = {}
    if log_path is not None:
        report.log_path = shard.part(log_path)
        report.log_path.parent.mkdir(parents=True, exist_ok=True)
        truncate_partial_line(report.log_path)
        latest = known_rows(log_path, key_field)  # the job's log and every part (this one's and earlier runs')
    pending = []
    for item in mine:
        if is_done(item, latest.get(key(item))):
            report.skipped_keys.append(key(item))
        else:
            pending.append(item)

    def run_batch(batch: list[Item]) -> list[dict]:
        try:
            rows = process(batch)
        except fatal:
            raise
        except Exception as error:  # noqa: BLE001  (find the item(s) at fault: redo the batch one by one)
            if len(batch) == 1:
                return [failure_row(batch[0], error)]
            return [row for item in batch for row in run_batch([item])]
        return _checked(rows, batch, key, key_field)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), initial=report.skipped, desc=description, unit=unit)
    try:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            rows = run_batch(batch)
            failures = [row for row in rows if is_failure(row)]
            if report.log_path is not None:
                append_jsonl(report.log_path, rows if log_failures else [r for r in rows if not is_failure(r)])
            report.failures.extend(failures)
            report.done_keys.extend(row[key_field] for row in rows if not is_failure(row))
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    if failures_path is not None:
        report.failures_path = shard.part(failures_path)
        write_json_atomic(report.failures_path, report.failures)
    return report


def _checked(rows: list[dict], batch: list, key: Callable, key_field: str) -> list[dict]:
    """The rows of a batch, after checking the one contract of `process` (a broken contract is a bug: raised)."""
    rows = list(rows)
    if [row.get(key_field) for row in rows] != [key(item) for item in batch]:
        raise RuntimeError(f"a job's process function must return one row per item, in order, each with its "
                           f"{key_field!r}; got {len(rows)} row(s) for {len(batch)} item(s)")
    return rows
