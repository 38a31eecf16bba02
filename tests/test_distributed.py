"""Data-parallel runs on 2 CPU processes (`torchrun`, gloo), compared with one process.

`emola evaluate --model`, `emola analyze` and `emola extract-priors` split their items between the ranks, merge them
back in input order (failures too) and write exactly what one process writes; a rank killed with SIGKILL is resumed
by the next launch without redoing an item; training splits every step's samples between the ranks and ends with
the weights of one process given the whole batch. The launches go through `tests/distributed_launch.py`, which runs
the real commands and records which rank wrote which item (see its docstring).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from safetensors.torch import load_file

from transformers_emola.cli import main as emola
from transformers_emola.synthetic import write_synthetic_faba

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "tests" / "distributed_launch.py"


def torchrun(*groups, cwd, trace=None, script=None, kill_rank=None, kill_after=None):
    """`torchrun --standalone --nproc-per-node 2 tests/distributed_launch.py ... -- GROUP [-- GROUP ...]`."""
    options = []
    for name, value in (("--trace", trace), ("--script", script), ("--kill-rank", kill_rank),
                        ("--kill-after", kill_after)):
        if value is not None:
            options += [name, str(value)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(LAUNCHER),
               *options]
    for group in groups:
        command += ["--", *map(str, group)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def traced(folder, log=None):
    """{rank: the keys each rank wrote to the job log named `log` (e.g. "predictions"), in order} or, without `log`,
    {rank: the sample ids of each training batch}."""
    by_rank = {}
    for rank in (0, 1):
        path = Path(folder) / f"rank{rank}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if log is None:
            by_rank[rank] = [record["batch"] for record in records if "batch" in record]
        else:
            by_rank[rank] = [key for record in records if record.get("log", "").startswith(f"{log}.")
                             for key in record["keys"]]
    return by_rank


def part_keys(path, field="id"):
    return [json.loads(line)[field] for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


def flat(lists):
    return [item for items in lists for item in items]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Synthetic FABA-Instruct (16 training faces, 12 eval faces) and a tiny EmoLA whose tokenizer knows the answers
    (so its greedy answers differ between faces and score above zero)."""
    root = tmp_path_factory.mktemp("bench")
    paths = write_synthetic_faba(root / "data", num_train=16, num_eval=12, seed=0, image_size=32, tasks=["au"])
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_emola", REPO / "examples" / "tiny_emola.py")
    tiny_emola = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_emola)
    tiny_emola.main(["--output_dir", str(root / "tiny"), "--annotations", str(paths["train_au"]),
                     str(paths["eval_au"]), "--seed", "1"])
    faces = root / "faces"
    faces.mkdir()
    astronaut = skimage.data.astronaut()
    face = astronaut[0:224, 100:324]
    # find_images sorts: rank 0 gets a, c, e and rank 1 b, d, f; the failures (b, e) are one on each rank
    Image.fromarray(face).save(faces / "a.png")
    (faces / "b.jpg").write_bytes(b"not a JPEG")
    Image.fromarray(np.ascontiguousarray(face[:, ::-1])).save(faces / "c.png")
    Image.fromarray(astronaut[10:250, 90:330]).save(faces / "d.png")
    Image.new("RGB", (224, 224), (128, 128, 128)).save(faces / "e.png")
    Image.fromarray(face).resize((160, 160)).save(faces / "f.png")
    return root, paths, faces


def evaluate_args(root, annotations, out):
    return ["evaluate", "--model", root / "tiny", "--annotations", annotations, "--data-root", root / "data",
            "--task", "au", "--out", out, "--max-new-tokens", "12", "--batch-size", "2", "--no-plots"]


def analyze_args(root, faces, out):
    return ["analyze", faces, "--model", root / "tiny", "--out", out, "--backend", "dlib", "--task", "au",
            "--max-new-tokens", "8", "--batch-size", "2", "--no-progress"]


def extract_args(faces, out):
    return ["extract-priors", faces, "--out", out, "--backend", "dlib", "--no-progress"]


@pytest.fixture(scope="module")
def launched(bench, tmp_path_factory):
    """One launch of 2 processes running evaluate, analyze and extract-priors in turn (one start-up for three)."""
    root, paths, faces = bench
    work = tmp_path_factory.mktemp("two")
    run = torchrun(evaluate_args(root, paths["eval_au"], work / "evaluate"),
                   analyze_args(root, faces, work / "analyze"), extract_args(faces, work / "priors"), cwd=work,
                   trace=work)
    return run, work


def test_evaluate_on_two_processes_writes_what_one_process_writes(bench, launched, tmp_path):
    root, paths, _ = bench
    run, work = launched
    assert run.returncode == 1, run.stderr[-3000:]  # analyze and extract-priors report their failed images
    assert emola(list(map(str, evaluate_args(root, paths["eval_au"], tmp_path)))) == 0
    two = work / "evaluate"
    assert (two / "predictions.jsonl").read_bytes() == (tmp_path / "predictions.jsonl").read_bytes()
    one_report, two_report = (json.loads((path / "report.json").read_text()) for path in (tmp_path, two))
    assert (one_report.pop("num_processes"), one_report.pop("samples_per_process")) == (1, [12])
    assert (two_report.pop("num_processes"), two_report.pop("samples_per_process")) == (2, [6, 6])
    assert two_report == one_report and one_report["s_rege"] > 0
    predictions = [json.loads(line)["prediction"] for line in (two / "predictions.jsonl").read_text().splitlines()]
    assert len(set(predictions)) > 1  # the answers depend on the face, so a mix-up of faces would show
    # each face generated once, by the rank that owns it; the part files are merged away; one summary, by rank 0
    ids = [row["id"] for row in json.loads(Path(paths["eval_au"]).read_text())]
    assert traced(work, "predictions") == {0: ids[0::2], 1: ids[1::2]}
    assert sorted(p.name for p in two.iterdir()) == ["failures.json", "predictions.jsonl", "report.json", "report.md"]
    assert run.stdout.count("REGE (au, paper)") == 1
    assert "(12 samples; generated by 2 processes: 6/6)" in run.stdout


def test_analyze_on_two_processes_writes_what_one_process_writes(bench, launched, tmp_path, capsys):
    root, _, faces = bench
    run, work = launched
    assert emola(list(map(str, analyze_args(root, faces, tmp_path)))) == 1
    capsys.readouterr()
    two = work / "analyze"
    for name in ("results.jsonl", "results.csv", "failures.json"):
        assert (two / name).read_bytes() == (tmp_path / name).read_bytes(), name
    failures = json.loads((two / "failures.json").read_text())
    assert [(Path(f["image"]).name, f["status"]) for f in failures] == [("b.jpg", "unreadable"), ("e.png", "no_face")]
    names = [Path(row["image"]).name for row in map(json.loads, (two / "results.jsonl").read_text().splitlines())]
    assert names == ["a.png", "b.jpg", "c.png", "d.png", "e.png", "f.png"]  # input order, failures in place
    analyzed = {rank: [Path(key).name for key in keys] for rank, keys in traced(work, "results").items()}
    assert analyzed == {0: ["a.png", "c.png", "e.png"], 1: ["b.jpg", "d.png", "f.png"]}
    assert run.stdout.count("emola analyze:") == 1
    assert "4 analysed, 0 already done, 2 failed" in run.stdout and "(2 processes: 3/3 images)" in run.stdout


def test_extract_priors_on_two_processes_writes_what_one_process_writes(bench, launched, tmp_path, capsys):
    _, _, faces = bench
    run, work = launched
    assert emola(list(map(str, extract_args(faces, tmp_path)))) == 1
    capsys.readouterr()
    two = work / "priors"
    assert sorted(p.name for p in two.iterdir()) == ["a.npy", "c.npy", "d.npy", "f.npy", "failures.json"]
    for name in ("a.npy", "c.npy", "d.npy", "f.npy"):
        np.testing.assert_array_equal(np.load(two / name), np.load(tmp_path / name))
    assert (two / "failures.json").read_bytes() == (tmp_path / "failures.json").read_bytes()
    assert [Path(f["image"]).name for f in json.loads((two / "failures.json").read_text())] == ["b.jpg", "e.png"]
    assert run.stdout.count("extract-priors (dlib") == 1
    assert "4 written, 0 already present, 2 failed" in run.stdout and "(2 processes: 3/3 images)" in run.stdout


def test_a_killed_rank_is_resumed_without_redoing_finished_items(bench, tmp_path):
    """Rank 1 is SIGKILLed after its first batch: the launcher stops rank 0 (nobody waits for the dead), nothing is
    merged; the next launch does only what was left and ends with one process's files. Two unreadable faces (one
    per rank) are retried and merged into failures.json in input order."""
    root, paths, _ = bench
    rows = json.loads(Path(paths["eval_au"]).read_text())
    rows[2:2] = [{**rows[0], "id": "broken-a", "image": "missing-a.png"}]
    rows[7:7] = [{**rows[0], "id": "broken-b", "image": "missing-b.png"}]
    annotations = tmp_path / "anno.json"
    annotations.write_text(json.dumps(rows))
    good = [row["id"] for row in rows if not row["id"].startswith("broken")]
    out, trace = tmp_path / "two", tmp_path / "trace"
    trace.mkdir()

    killed = torchrun(evaluate_args(root, annotations, out), cwd=tmp_path, kill_rank=1, kill_after=2)
    assert killed.returncode != 0 and "Signal 9 (SIGKILL)" in killed.stdout + killed.stderr
    assert not (out / "predictions.jsonl").exists() and not (out / "report.json").exists()
    # what each rank had finished: its first batch for rank 1, whatever rank 0 did before the launcher stopped it
    before = {rank: part_keys(out / f"predictions.part{rank}of2.jsonl") for rank in (0, 1)}
    assert before[1] == [rows[1]["id"], rows[3]["id"]]

    resumed = torchrun(evaluate_args(root, annotations, out), cwd=tmp_path, trace=trace)
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # the two unreadable faces
    after = traced(trace, "predictions")
    assert after[1] == [row["id"] for row in rows[1::2] if row["id"] in good][2:]
    assert sorted(before[0] + before[1] + after[0] + after[1]) == sorted(good)  # every face generated once

    one = tmp_path / "one"
    assert emola(list(map(str, evaluate_args(root, annotations, one)))) == 1
    assert (out / "predictions.jsonl").read_bytes() == (one / "predictions.jsonl").read_bytes()
    assert (out / "failures.json").read_bytes() == (one / "failures.json").read_bytes()
    assert [f["id"] for f in json.loads((out / "failures.json").read_text())] == ["broken-a", "broken-b"]
    report = json.loads((out / "report.json").read_text())
    assert report["samples_per_process"] == [7, 7] and report["s_rege"] == json.loads(
        (one / "report.json").read_text())["s_rege"]
    assert sorted(p.name for p in out.iterdir()) == ["failures.json", "predictions.jsonl", "report.json", "report.md"]


def test_training_on_two_processes_splits_each_step_and_equals_one_process(bench, tmp_path, monkeypatch):
    """The tiny recipe under torchrun: each rank trains on its own half of every step's 8 samples (all 16 once per
    epoch), the log states 2 processes, one checkpoint and one merged model are written, and the weights are those of
    one process given all 8 samples a step (DDP averages the gradients; LoRA dropout off so both are deterministic)."""
    from transformers import AutoModelForImageTextToText
    from trl import ModelConfig, TrlParser

    from transformers_emola.training import EmolaScriptArguments, EmolaSFTConfig, collator, train_emola

    root, paths, _ = bench
    common = ["--config", REPO / "examples/recipes/tiny_cpu.yaml", "--model_name_or_path", root / "tiny",
              "--train_annotations", paths["train_au"], "--image_root", root / "data", "--max_steps", "2",
              "--save_steps", "2", "--logging_steps", "1", "--disable_tqdm", "true", "--lora_dropout", "0"]
    run = torchrun([*common, "--output_dir", tmp_path / "two"], cwd=tmp_path, trace=tmp_path,
                   script=REPO / "examples/sft_emola.py")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("==== EmoLA training summary ====") == 1
    assert "steps: 2   samples: 16   processes: 2" in run.stdout

    batches = []
    call = collator.EmolaDataCollator.__call__
    monkeypatch.setattr(collator.EmolaDataCollator, "__call__",
                        lambda self, examples: batches.append([e["id"] for e in examples]) or call(self, examples))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parser = TrlParser((EmolaScriptArguments, EmolaSFTConfig, ModelConfig))
        one = train_emola(*parser.parse_args_and_config(list(map(str, [
            *common, "--output_dir", tmp_path / "one", "--per_device_train_batch_size", "8"]))))
    finally:
        torch.set_num_threads(threads)
    assert one["num_processes"] == 1

    ranks = traced(tmp_path)
    assert [len(batch) for batch in ranks[0] + ranks[1]] == [4, 4, 4, 4]
    assert [a + b for a, b in zip(ranks[0], ranks[1])] == batches  # step k: rank 0's half, then rank 1's
    assert sorted(flat(batches)) == sorted(row["id"] for row in json.loads(Path(paths["train_au"]).read_text()))
    two_losses = [json.loads(line.replace("'", '"'))["loss"] for line in run.stdout.splitlines()
                  if line.startswith("{'loss'")]
    one_losses = [entry["loss"] for entry in one["trainer"].state.log_history if "loss" in entry]
    assert np.allclose([float(loss) for loss in two_losses], one_losses, atol=1e-3) and len(one_losses) == 2

    two = load_file(tmp_path / "two/adapter_model.safetensors")
    ref = load_file(tmp_path / "one/adapter_model.safetensors")
    assert two.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(two[name], ref[name], rtol=0, atol=1e-6, msg=name)
    assert sorted(p.name for p in (tmp_path / "two").glob("checkpoint-*")) == ["checkpoint-2"]
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "two/merged")
    reference = AutoModelForImageTextToText.from_pretrained(tmp_path / "one/merged")
    for (name, value), (_, expected) in zip(merged.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6, msg=name)
