"""Scoring a predictions.jsonl file, the REGE report (JSON, Markdown, PNG) and `emola evaluate --predictions`."""

import json
import math

import pytest

from transformers_emola.evaluation import read_predictions, score_predictions_file, write_report
from transformers_emola.metrics import compute_rege


AU_ROWS = [
    {"id": "a", "prediction": "AU1 and AU2 are raised, AU4 is not visible.", "reference": "AU1 and AU2 are raised.",
     "label": "1, 2"},
    {"id": "b", "prediction": "AU06 and AU12 are active.", "reference": "AU6 and AU12 show a smile.",
     "label": "6, 12"},
    {"id": "c", "prediction": "", "reference": "AU4 lowers the brows.", "label": "4"},
]  # fmt: skip
EMOTION_ROWS = [
    {"id": 1, "prediction": "The person looks sad.", "reference": "Sadness shows.", "label": "Sadness"},
    {"id": 2, "prediction": "A smile of happiness.", "reference": "Happiness.", "label": 0},
    {"id": 3, "prediction": "Clear anger", "reference": "Anger.", "label": "Anger"},
]


def write_jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(row) for row in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("task,rows", [("au", AU_ROWS), ("emotion", EMOTION_ROWS)])
@pytest.mark.parametrize("mode", ["paper", "strict"])
def test_score_predictions_file_equals_compute_rege(tmp_path, task, rows, mode):
    path = write_jsonl(tmp_path / "predictions.jsonl", rows, extra_lines=[""])
    result = score_predictions_file(path, task, mode)
    expected = compute_rege([r["prediction"] for r in rows], [r["reference"] for r in rows],
                            [r["label"] for r in rows], task=task, mode=mode)  # fmt: skip
    assert result.pop("skipped") == []
    assert json.dumps(result, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_score_predictions_file_details_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "predictions.jsonl", AU_ROWS)
    result = score_predictions_file(path, "au", return_details=True, limit=2)
    assert result["num_samples"] == 2
    assert [d["id"] for d in result["details"]] == ["a", "b"]
    assert result["details"][0]["predicted_aus"] == [1, 2, 4]


def test_bad_lines_raise_or_are_skipped(tmp_path):
    bad = [
        '{"id": "x", "prediction": "AU1"}',
        "not json",
        '{"id": "y", "prediction": 5, "reference": "r", "label": "1"}',
    ]
    path = write_jsonl(tmp_path / "predictions.jsonl", AU_ROWS[:2], extra_lines=bad)
    with pytest.raises(ValueError, match=r"predictions.jsonl:3: missing field\(s\) \['reference', 'label'\]"):
        score_predictions_file(path, "au")
    result = score_predictions_file(path, "au", on_error="skip")
    assert result["num_samples"] == 2
    assert [item["line"] for item in result["skipped"]] == [3, 4, 5]
    assert "'prediction' must be a string" in result["skipped"][2]["error"]
    # an invalid label costs its sample only
    rows = EMOTION_ROWS + [{"id": 9, "prediction": "Calm.", "reference": "Calm.", "label": "Contempt"}]
    path = write_jsonl(tmp_path / "emotion.jsonl", rows)
    with pytest.raises(ValueError, match="Contempt"):
        score_predictions_file(path, "emotion")
    result = score_predictions_file(path, "emotion", on_error="skip")
    assert result["num_samples"] == 3 and result["skipped"][0]["id"] == 9
    with pytest.raises(FileNotFoundError):
        score_predictions_file(tmp_path / "missing.jsonl", "au")
    with pytest.raises(ValueError, match="Unknown task"):
        score_predictions_file(path, "valence", on_error="skip")
    with pytest.raises(ValueError, match="limit"):
        read_predictions(path, limit=0)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_write_report_au(tmp_path):
    pytest.importorskip("matplotlib")
    result = compute_rege([r["prediction"] for r in AU_ROWS], [r["reference"] for r in AU_ROWS],
                          [r["label"] for r in AU_ROWS], task="au", mode="paper")  # fmt: skip
    paths = write_report(result, tmp_path / "report", "au")
    assert set(paths) == {"json", "markdown", "plot"} and paths["plot"].name == "per_au_f1.png"
    saved = json.loads(paths["json"].read_text())  # strict JSON: no NaN, string keys
    assert saved["s_re"] == result["s_re"] and saved["per_au_f1"]["1"] == result["per_au_f1"][1]
    assert saved["per_au_f1"]["5"] is None
    markdown = paths["markdown"].read_text()
    assert f"| {result['s_re']:.2f} | {result['s_ge']:.2f} | {result['s_rege']:.2f} | 3 | 1 |" in markdown
    assert "| AU12 | Lip Corner Puller | 100.00 | 100.00 |" in markdown
    assert "| AU5 | Upper Lid Raiser | n/a | n/a |" in markdown
    width, height = _png_size(paths["plot"])
    assert width > 300 and height > 200


def test_write_report_emotion_and_nan(tmp_path):
    pytest.importorskip("matplotlib")
    result = compute_rege(["", "The person looks sad."], ["Sad.", "Sadness."], [1, "Happiness"], task="emotion",
                          mode="paper")  # fmt: skip
    paths = write_report(result, tmp_path, "emotion")
    assert paths["plot"].name == "confusion_matrix.png"
    saved = json.loads(paths["json"].read_text())
    assert saved["confusion_matrix"] == result["confusion_matrix"]
    markdown = paths["markdown"].read_text()
    assert "| sadness | 1 | 0 | 0 | 0 | 0 | 0 | 0 |" in markdown
    assert _png_size(paths["plot"])[0] > 300
    nan_result = compute_rege(["Relaxed."], ["Relaxed."], [""], task="au")
    assert math.isnan(nan_result["s_re"])
    nan_paths = write_report(nan_result, tmp_path / "nan", "au", plots=False)
    assert "plot" not in nan_paths
    assert json.loads(nan_paths["json"].read_text())["s_re"] is None
    assert "| n/a |" in nan_paths["markdown"].read_text()
    with pytest.raises(ValueError, match="missing"):
        write_report({"s_re": 1.0}, tmp_path, "au")
    with pytest.raises(ValueError, match="task"):
        write_report(result, tmp_path, "valence")


def test_cli_evaluate_predictions(tmp_path, capsys):
    from transformers_emola.cli import main

    path = write_jsonl(tmp_path / "predictions.jsonl", AU_ROWS)
    out = tmp_path / "out"
    code = main(["evaluate", "--predictions", str(path), "--task", "au", "--mode", "strict", "--out", str(out),
                 "--no-plots"])  # fmt: skip
    assert code == 0
    expected = score_predictions_file(path, "au", "strict")
    assert json.loads((out / "report.json").read_text())["s_rege"] == expected["s_rege"]
    assert f"S_rege {expected['s_rege']:.2f}" in capsys.readouterr().out

    # a bad line: the rest is scored and reported, the exit code says something failed
    path = write_jsonl(tmp_path / "partial.jsonl", EMOTION_ROWS, extra_lines=["{broken"])
    code = main(["evaluate", "--predictions", str(path), "--task", "emotion", "--out", str(tmp_path / "partial"),
                 "--no-plots", "--au-set", "faba"])  # fmt: skip
    assert code == 1
    assert json.loads((tmp_path / "partial" / "report.json").read_text())["num_samples"] == 3
    assert "line 4" in capsys.readouterr().err

    assert main(["evaluate", "--predictions", str(tmp_path / "nope.jsonl"), "--task", "au", "--out", str(out)]) == 1
    assert main(["evaluate", "--task", "au"]) == 2
    assert "--predictions" in capsys.readouterr().err


def test_cli_evaluate_flags():
    import argparse

    from transformers_emola.commands import evaluate as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--annotations", "a.json", "--data-root", "d", "--task", "emotion",
                              "--batch-size", "4", "--max-new-tokens", "64", "--limit", "10", "--mode", "strict",
                              "--au-set", "bp4d", "--out", "o"])  # fmt: skip
    assert (args.model, args.annotations, args.data_root, args.batch_size, args.max_new_tokens, args.limit) == (
        "m", "a.json", "d", 4, 64, 10
    )
    assert args.predictions is None and args.mode == "strict" and args.au_set == "bp4d"


def test_report_plots_show_what_the_score_hides():
    pytest.importorskip("matplotlib")
    from transformers_emola.evaluation import report_figure

    # AU5 never appears (left out of S_re): drawn as a hatched "n/a" placeholder, not as an F1 of 0
    result = compute_rege([r["prediction"] for r in AU_ROWS], [r["reference"] for r in AU_ROWS],
                          [r["label"] for r in AU_ROWS], task="au", mode="paper")  # fmt: skip
    left_out = [au for au, f1 in result["per_au_f1"].items() if f1 is None]
    assert 5 in left_out
    axes = report_figure(result, "au").axes[0]
    assert [text.get_text() for text in axes.texts] == ["n/a"] * len(left_out)
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["F1", "n/a: left out of S_re", f"S_re = {result['s_re']:.1f}"]
    assert "paper mode" in axes.get_title()
    # nothing left out: no n/a entry in the legend either
    full = compute_rege(["AU1 and AU2."] * 2 + ["AU4."], ["."] * 3, ["1, 2", "1", "4"], task="au", mode="strict",
                        au_set="faba")  # fmt: skip
    full["per_au_f1"] = {au: f1 for au, f1 in full["per_au_f1"].items() if f1 is not None}
    axes = report_figure(full, "au").axes[0]
    assert not axes.texts and "n/a" not in " ".join(t.get_text() for t in axes.get_legend().get_texts())

    # emotion: the title names the mode and the keyword-less answers; the colour bar counts in whole numbers
    result = compute_rege(["", "The face shows sadness.", "The face shows happiness."], ["."] * 3,
                          [1, "Sadness", "Happiness"], task="emotion", mode="paper")  # fmt: skip
    assert result["num_no_keyword"] == 1 and result["confusion_matrix"][1][0] == 1  # "" scored as happiness
    figure = report_figure(result, "emotion")
    title = figure.axes[0].get_title()
    assert "paper mode" in title and "1 of 3 without keyword" in title
    colorbar = figure.axes[1]
    ticks = colorbar.get_yticks()
    assert len(ticks) and all(float(tick).is_integer() for tick in ticks)
    strict = compute_rege([""], ["."], ["Sadness"], task="emotion", mode="strict")
    assert "strict mode" in report_figure(strict, "emotion").axes[0].get_title()
