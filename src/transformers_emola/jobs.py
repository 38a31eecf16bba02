"""One resumable batch runner behind `emola evaluate`, `emola analyze` and `emola extract-priors`.

A job is an ordered list of items (annotation rows, image files) and a function that turns a batch of them into
one result row each. `run_job` feeds the batches in input order and appends the rows to a JSON-lines log, flushed
and fsync'ed after every batch, so a kill loses at most the batch in flight; a restarted run reads the log and
skips the items already done. A failing item never stops the others: when a batch raises, its items are retried
one by one and only the item that still raises becomes a failure row (`{"status": "error", "error": ...}`); the
failures of the run are written to a `failures.json`. Errors that no item can escape (a missing package, missing
model weights) are `fatal` and stop the job at once.

Sharding: a `Shard(index, count)` gives this process every `count`-th item starting at `index` and its own
`part` files, so several processes (ranks) can run one job side by side and resume independently; `merge_logs`
and `merge_failures` put their part files back together in input order.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

__all__ = [
    "JobReport",
    "Shard",
    "append_jsonl",
    "atomic_file",
    "is_failure",
    "latest_rows",
    "merge_failures",
    "merge_logs",
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


def merge_logs(path: str | os.PathLike, keys: Sequence[str], key_field: str, count: int) -> list[dict]:
    """The rows of the `count` part logs of `path` (see `Shard.part`), the latest row of each key, in the order of
    `keys` (the job's input order); keys without a row are left out."""
    latest: dict[str, dict] = {}
    for index in range(count):
        latest.update(latest_rows(read_jsonl(Shard(index, count).part(path)), key_field))
    return [latest[key] for key in keys if key in latest]


def merge_failures(path: str | os.PathLike, keys: Sequence[str], key_field: str, count: int) -> list[dict]:
    """The failures of the `count` part files of `path` (a failures.json), in the order of `keys`."""
    failures: dict[str, dict] = {}
    for index in range(count):
        part = Shard(index, count).part(path)
        if part.exists():
            failures.update({row[key_field]: row for row in json.loads(part.read_text(encoding="utf-8"))})
    return [failures[key] for key in keys if key in failures]


# ---------------------------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class JobReport(Generic[Item]):
    """What `run_job` did in this process.

    Attributes:
        items: this shard's items, in input order.
        done: how many were finished in this run (successes).
        skipped: how many an earlier run had already finished.
        failures: the failure rows of this run, in input order.
        log_path, failures_path: the files written (part files when sharded), or None.
    """

    items: list[Item]
    done: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    log_path: Path | None = None
    failures_path: Path | None = None

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
    shard: Shard = Shard(),
) -> JobReport[Item]:
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
        progress: show a progress bar; `description` and `unit` label it.
        shard: the part of the job this process runs (see `Shard`).
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

    mine = shard.take(items)
    report: JobReport[Item] = JobReport(mine)
    latest: dict[str, dict] = {}
    if log_path is not None:
        report.log_path = shard.part(log_path)
        report.log_path.parent.mkdir(parents=True, exist_ok=True)
        truncate_partial_line(report.log_path)
        latest = latest_rows(read_jsonl(report.log_path), key_field)
    pending = [item for item in mine if not is_done(item, latest.get(key(item)))]
    report.skipped = len(mine) - len(pending)

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
            report.done += len(rows) - len(failures)
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
