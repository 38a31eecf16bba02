"""The one batch runner behind evaluate, analyze and extract-priors: order, resume, failure isolation, shards."""

import json
import threading

import pytest

from transformers_emola.jobs import Launch, LaunchError, Shard, merge_failures, merge_logs, read_jsonl, run_job

ITEMS = [f"item{i}" for i in range(7)]


def squares(calls, bad=(), fatal_at=None):
    """A process function over "item<i>" strings: row {"key", "value": i*i}; `bad` items raise."""

    def process(batch):
        calls.append(list(batch))
        for item in batch:
            if item == fatal_at:
                raise ImportError("a package is missing")
            if item in bad:
                raise ValueError(f"cannot read {item}")
        return [{"key": item, "value": int(item[4:]) ** 2} for item in batch]

    return process


def test_rows_in_input_order_and_a_bad_item_isolated(tmp_path):
    calls = []
    report = run_job(ITEMS, squares(calls, bad={"item3"}), key=str, key_field="key", log_path=tmp_path / "log.jsonl",
                     failures_path=tmp_path / "failures.json", batch_size=3, progress=False)
    rows = read_jsonl(tmp_path / "log.jsonl")
    assert [row["key"] for row in rows] == ["item0", "item1", "item2", "item4", "item5", "item6"]
    assert [row["value"] for row in rows] == [0, 1, 4, 16, 25, 36]
    # the batch holding the bad item is redone one by one: only item3 fails, its neighbours are kept
    assert calls == [["item0", "item1", "item2"], ["item3", "item4", "item5"], ["item3"], ["item4"], ["item5"],
                     ["item6"]]
    failure = {"key": "item3", "status": "error", "error": "ValueError: cannot read item3"}
    assert report.failures == [failure] and json.loads((tmp_path / "failures.json").read_text()) == [failure]
    assert (report.done, report.skipped, report.ok) == (6, 0, False)


def test_resume_skips_finished_items_and_retries_failures(tmp_path):
    log = tmp_path / "log.jsonl"
    run_job(ITEMS[:4], squares([], bad={"item1"}), key=str, key_field="key", log_path=log, batch_size=2,
            progress=False)
    with open(log, "a") as handle:
        handle.write('{"key": "item4", "val')  # killed in the middle of a write
    calls = []
    report = run_job(ITEMS, squares(calls), key=str, key_field="key", log_path=log, batch_size=2, progress=False)
    assert calls == [["item1", "item4"], ["item5", "item6"]]  # item0, 2, 3 were done; the half line is redone
    assert (report.done, report.skipped, report.failures) == (4, 3, [])
    assert sorted(row["key"] for row in read_jsonl(log)) == sorted(ITEMS)  # each item once, the partial line gone


def test_failures_can_be_logged_and_set_up_errors_stop_the_job(tmp_path):
    log = tmp_path / "log.jsonl"
    run_job(ITEMS[:3], squares([], bad={"item1"}), key=str, key_field="key", log_path=log, log_failures=True,
            progress=False)
    assert [row.get("status", "ok") for row in read_jsonl(log)] == ["ok", "error", "ok"]
    with pytest.raises(ImportError):
        run_job(ITEMS, squares([], fatal_at="item5"), key=str, key_field="key", fatal=(ImportError,),
                progress=False, batch_size=2)


def test_done_can_be_decided_by_the_caller_without_a_log(tmp_path):
    calls = []
    report = run_job(ITEMS, squares(calls), key=str, key_field="key", is_done=lambda item, row: item < "item3",
                     progress=False, batch_size=10)
    assert calls == [["item3", "item4", "item5", "item6"]] and report.skipped == 3 and report.log_path is None


def test_contract_and_input_errors():
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        run_job(["a", "b", "a"], lambda batch: [], key=str, key_field="key", progress=False)
    with pytest.raises(RuntimeError, match="one row per item"):  # a bug in the process function is not a failure
        run_job(ITEMS, lambda batch: [{"key": "x"}], key=str, key_field="key", progress=False)
    with pytest.raises(ValueError, match="0 <= index < count"):
        Shard(2, 2)


def test_shards_split_the_items_and_merge_back_in_input_order(tmp_path):
    """Two processes, each its shard and part files; the merge equals one process's run."""
    log, failures = tmp_path / "log.jsonl", tmp_path / "failures.json"
    single = run_job(ITEMS, squares([], bad={"item4"}), key=str, key_field="key", log_path=tmp_path / "one.jsonl",
                     progress=False)
    parts = [run_job(ITEMS, squares([], bad={"item4"}), key=str, key_field="key", log_path=log,
                     failures_path=failures, shard=Shard(index, 2), progress=False) for index in range(2)]
    assert [part.items for part in parts] == [ITEMS[0::2], ITEMS[1::2]]
    assert [part.log_path.name for part in parts] == ["log.part0of2.jsonl", "log.part1of2.jsonl"]
    assert not log.exists()
    assert merge_logs(log, ITEMS, "key") == read_jsonl(tmp_path / "one.jsonl")
    assert merge_failures(failures, ITEMS, "key", 2) == single.failures
    assert Shard().part(log) == log


def test_one_process_folds_in_the_part_files_a_killed_launch_left(tmp_path):
    """A launch of 2 was killed after each rank did some items: one process then does only the rest, and leaves
    one log in input order (rows of other items, from an earlier run, kept after them) and no part file."""
    log, failures = tmp_path / "log.jsonl", tmp_path / "failures.json"
    log.write_text('{"key": "other", "value": -1}\n')  # an earlier run over other items
    run_job(ITEMS[:3], squares([]), key=str, key_field="key", log_path=log, shard=Shard(0, 2), progress=False)
    run_job(ITEMS[:4], squares([]), key=str, key_field="key", log_path=log, shard=Shard(1, 2), progress=False)
    (tmp_path / "failures.part1of2.json").write_text("[]")
    calls = []
    report = run_job(ITEMS, squares(calls, bad={"item6"}), key=str, key_field="key", log_path=log,
                     failures_path=failures, progress=False)
    assert calls == [["item4", "item5", "item6"], ["item4"], ["item5"], ["item6"]]  # 0, 2 (rank 0), 1, 3 (rank 1)
    assert report.skipped_keys == ["item0", "item1", "item2", "item3"] and report.done_keys == ["item4", "item5"]
    assert [row["key"] for row in read_jsonl(log)] == ITEMS[:6] + ["other"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failures.json", "log.jsonl"]
    assert report.samples_per_process == [7] and [f["key"] for f in report.failures] == ["item6"]


class ThreadRanks(Launch):
    """The ranks of a launch as threads of this process: `all_gather` exchanges through `group` (a shared dict
    and barrier) instead of torch.distributed, so the runner's own coordination is tested in milliseconds (the real
    launches, with gloo, are in test_distributed.py)."""

    def all_gather(self, value):
        self.group["values"][self.index] = value
        self.group["barrier"].wait()
        return list(self.group["values"])


def run_ranks(count, job):
    """Run `job(launch)` on `count` thread ranks; each rank's return value or raised exception."""
    group = {"values": [None] * count, "barrier": threading.Barrier(count, timeout=60)}
    outcomes = [None] * count

    def rank(index):
        try:
            outcomes[index] = job(ThreadRanks(index, count, group=group))
        except Exception as error:  # noqa: BLE001
            outcomes[index] = error

    threads = [threading.Thread(target=rank, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a rank hangs"
    return outcomes


def test_ranks_merge_into_the_files_of_one_process(tmp_path):
    single = run_job(ITEMS, squares([], bad={"item4"}), key=str, key_field="key", log_path=tmp_path / "one.jsonl",
                     failures_path=tmp_path / "one.json", progress=False)
    log, failures = tmp_path / "log.jsonl", tmp_path / "failures.json"
    main, other = run_ranks(2, lambda launch: run_job(
        ITEMS, squares([], bad={"item4"}), key=str, key_field="key", log_path=log, failures_path=failures,
        batch_size=2, progress=False, launch=launch))
    assert other is None  # only the main process reports
    assert read_jsonl(log) == read_jsonl(tmp_path / "one.jsonl")
    assert json.loads(failures.read_text()) == single.failures == main.failures
    assert (main.samples_per_process, main.done_keys, main.skipped_keys) == ([4, 3], single.done_keys, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failures.json", "log.jsonl", "one.json", "one.jsonl"]


def test_a_rank_that_raises_stops_the_others_instead_of_keeping_them_waiting(tmp_path):
    """Rank 1 meets a set-up error: it raises it, rank 0 (finished) raises a LaunchError naming it, nothing is merged
    and the finished items stay in their part files for the next launch."""
    log = tmp_path / "log.jsonl"
    outcomes = run_ranks(3, lambda launch: run_job(
        ITEMS, squares([], fatal_at="item4"), key=str, key_field="key", log_path=log, batch_size=1,
        fatal=(ImportError,), progress=False, launch=launch))
    assert isinstance(outcomes[1], ImportError) and outcomes[2] is None
    assert isinstance(outcomes[0], LaunchError)
    assert "process 1 of 3: ImportError: a package is missing" in str(outcomes[0])
    assert not log.exists()
    assert [row["key"] for row in read_jsonl(tmp_path / "log.part1of3.jsonl")] == ["item1"]  # item4 raised
    assert [row["key"] for row in read_jsonl(tmp_path / "log.part0of3.jsonl")] == ["item0", "item3", "item6"]
