"""REGE: hand-checked paper-mode parity with the official FABA-Bench script, strict-mode fixes, the fast ROUGE-L
against the `rouge` package, the `evaluate` module, and the traditional AU / FER protocols."""

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from transformers_emola.metrics import (
    REGE_MODULE_PATH,
    RougeError,
    compute_au_f1_folds,
    compute_fer_accuracy,
    compute_rege,
    rouge_l_f,
)
from transformers_emola.metrics.rouge_l import OFFICIAL_MAX_TRACEBACK_STEPS, _lcs_tokens


SRC = Path(__file__).resolve().parents[1] / "src"


def package_rouge_l(prediction, reference):
    """The `rouge` package's ROUGE-L F (what the official script uses): the reference for our fast version.

    Only the tests that compare with it need the package; the rest of this file (strict mode included) does not.
    """
    rouge = pytest.importorskip("rouge")
    return rouge.Rouge().get_scores(prediction, reference, avg=True)["rouge-l"]["f"]


AU_PREDICTIONS = [
    "AU1 and AU2 are raised, AU4 is not visible.",
    "AU06 and AU12 are active.",
    "AU12 and AU25 are visible.",
    "AU1 is raised.",
]
AU_REFERENCES = [
    "The inner brows (AU1) and outer brows (AU2) are raised. The brows are not lowered.",
    "The cheeks are raised (AU6) and the lip corners pulled (AU12), a smile.",
    "AU12 and AU25 are visible, the lips part in a smile.",
    "The brow lowerer (AU4) is active, giving a frown.",
]
AU_LABELS = ["1, 2", "6, 12", "12, 25", "4"]


# ---------------------------------------------------------------------------------------------------- AU task


def test_au_paper_hand_checked():
    result = compute_rege(AU_PREDICTIONS, AU_REFERENCES, AU_LABELS, task="au", mode="paper")
    # paper parses {1,2,4}, {12} ("AU06" dropped), {12,25}, {1}
    f1 = result["per_au_f1"]
    assert f1[1] == pytest.approx(200 / 3)  # TP 1, FP 1, FN 0
    assert f1[2] == 100.0
    assert f1[4] == 0.0  # "AU4 is not visible" counted, but the AU4 sample predicts AU1 only
    assert f1[6] == 0.0  # AU6 labelled once, never predicted: 2x2 matrix, TP = 0
    assert f1[12] == 100.0 and f1[25] == 100.0
    # never present in labels or predictions: 1x1 confusion matrix, left out of the mean
    assert result["undefined_aus"] == [5, 10, 17, 24, 26, 43]
    assert all(f1[au] is None for au in result["undefined_aus"])
    assert result["s_re"] == pytest.approx((2 / 3 + 1 + 0 + 0 + 1 + 1) / 6 * 100)
    assert result["per_au_accuracy"][1] == 75.0 and result["per_au_accuracy"][4] == 50.0
    assert result["au_accuracy"] == pytest.approx(np.mean([0.75, 1, 0.5, 0.75, 1, 1]) * 100)
    expected_ge = np.mean([package_rouge_l(p, r) for p, r in zip(AU_PREDICTIONS, AU_REFERENCES)]) * 100
    assert result["s_ge"] == expected_ge  # bit-exact
    assert result["s_rege"] == result["s_re"] + result["s_ge"]
    assert result["num_samples"] == 4 and result["num_rouge_failures"] == 0 and result["au_set"] == "faba"


def test_au_strict_hand_checked():
    result = compute_rege(AU_PREDICTIONS, AU_REFERENCES, AU_LABELS, task="au", mode="strict")
    # strict parses {1,2}, {6,12}, {12,25}, {1}
    f1 = result["per_au_f1"]
    assert (f1[1], f1[2], f1[4], f1[6], f1[12], f1[25]) == (pytest.approx(200 / 3), 100.0, 0.0, 100.0, 100.0, 100.0)
    assert result["undefined_aus"] == [5, 10, 17, 24, 26, 43]
    assert result["s_re"] == pytest.approx((2 / 3 + 1 + 0 + 1 + 1 + 1) / 6 * 100)


def test_au_single_class_exclusion_paper_vs_strict():
    predictions = ["AU25 and AU12 are active.", "AU25 is visible.", "AU25, AU4."]
    labels = ["12, 25", "25, 4", "25"]
    paper = compute_rege(predictions, predictions, labels, task="au", mode="paper")
    strict = compute_rege(predictions, predictions, labels, task="au", mode="strict")
    # AU25 is present and predicted everywhere: the official 1x1 matrix drops it although F1 would be 100
    assert paper["per_au_f1"][25] is None and 25 in paper["undefined_aus"]
    assert paper["s_re"] == 50.0  # mean(AU12 = 100, AU4 = 0)
    assert strict["per_au_f1"][25] == 100.0 and 25 not in strict["undefined_aus"]
    assert strict["s_re"] == pytest.approx(200 / 3)


def test_au_all_undefined_gives_nan():
    result = compute_rege(["The face is relaxed."], ["The face is relaxed."], [""], task="au", mode="paper")
    assert math.isnan(result["s_re"]) and math.isnan(result["s_rege"])
    assert result["undefined_aus"] == [1, 2, 4, 5, 6, 10, 12, 17, 24, 25, 26, 43]


def test_au_sets():
    predictions = ["AU5 and AU9 are active.", "AU1 is active."]
    labels = ["9", "1, 5"]
    disfa = compute_rege(predictions, predictions, labels, task="au", au_set="DISFA")
    assert disfa["au_set"] == "disfa"
    assert list(disfa["per_au_f1"]) == [1, 2, 4, 6, 9, 12, 25, 26]
    assert disfa["per_au_f1"][9] == 100.0 and disfa["per_au_f1"][1] == 100.0  # AU5 not in DISFA
    assert disfa["s_re"] == 100.0
    faba = compute_rege(predictions, predictions, labels, task="au", au_set="faba")
    assert faba["per_au_f1"][5] == 0.0 and 9 not in faba["per_au_f1"]  # AU9 parsed but not scored on FABA


def test_au_labels_paper_split_vs_strict():
    paper = compute_rege(["AU1 and AU2."], ["x"], ["1,2"], task="au", mode="paper")
    strict = compute_rege(["AU1 and AU2."], ["x"], ["1,2"], task="au", mode="strict")
    assert paper["per_au_f1"][1] == 0.0  # "1,2" matches no AU: predictions are false positives
    assert strict["per_au_f1"][1] == 100.0


# ---------------------------------------------------------------------------------------------------- emotion task

EMOTION_PREDICTIONS = [
    "The person looks sad.",
    "The face shows sadness.",
    "The expression is neutral",
    "It is hard to read.",
    "",
]
EMOTION_REFERENCES = [
    "The downturned lips suggest sadness.",
    "The face shows sadness, with lowered brows.",
    "A calm, neutral expression.",
    "The person is smiling, a sign of happiness.",
    "The person shows happiness.",
]
EMOTION_LABELS = ["Sadness", 1, "neutral", 0, "Happiness"]


def test_emotion_paper_hand_checked():
    result = compute_rege(EMOTION_PREDICTIONS, EMOTION_REFERENCES, EMOTION_LABELS, task="emotion", mode="paper")
    # parsed: happiness (no keyword), sadness, neutral (fallback), happiness (default), happiness (fallback)
    assert result["s_re"] == result["accuracy"] == 80.0
    assert result["num_parser_fallbacks"] == 2 and result["num_unparsed"] == 0
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (7, 7) and matrix.sum() == 5
    assert matrix[1, 0] == 1 and matrix[1, 1] == 1 and matrix[4, 4] == 1 and matrix[0, 0] == 2
    # the empty prediction makes ROUGE raise: the official script leaves it out of the mean
    scored = [package_rouge_l(p, r) for p, r in zip(EMOTION_PREDICTIONS[:4], EMOTION_REFERENCES[:4])]
    assert result["num_rouge_failures"] == 1
    assert result["s_ge"] == np.mean(scored) * 100
    assert result["s_rege"] == 80.0 + result["s_ge"]


def test_emotion_strict_hand_checked():
    result = compute_rege(EMOTION_PREDICTIONS, EMOTION_REFERENCES, EMOTION_LABELS, task="emotion", mode="strict")
    # parsed: sadness, sadness, neutral, unparsed, unparsed
    assert result["s_re"] == 60.0
    assert result["num_unparsed"] == 2 and result["num_parser_fallbacks"] == 0
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == 3 and matrix[1, 1] == 2 and matrix[4, 4] == 1
    scored = [package_rouge_l(p, r) for p, r in zip(EMOTION_PREDICTIONS[:4], EMOTION_REFERENCES[:4])] + [0.0]
    assert result["s_ge"] == pytest.approx(np.mean(scored) * 100, abs=1e-12)


def test_details():
    result = compute_rege(EMOTION_PREDICTIONS, EMOTION_REFERENCES, EMOTION_LABELS, task="emotion", mode="paper",
                          return_details=True)  # fmt: skip
    details = result["details"]
    assert [d["predicted_emotion"] for d in details] == ["happiness", "sadness", "neutral", "happiness", "happiness"]
    assert [d["correct"] for d in details] == [False, True, True, True, True]
    assert details[4]["rouge_l"] is None and details[1]["rouge_l"] == package_rouge_l(
        EMOTION_PREDICTIONS[1], EMOTION_REFERENCES[1]
    )
    au = compute_rege(AU_PREDICTIONS, AU_REFERENCES, AU_LABELS, task="au", return_details=True)["details"]
    assert au[0]["predicted_aus"] == [1, 2, 4] and au[0]["label_aus"] == [1, 2] and not au[0]["exact_match"]


def test_empty_predictions_are_scored_not_crashing():
    for mode in ("paper", "strict"):
        for task, label in (("au", "1"), ("emotion", 0)):
            result = compute_rege(["", "   "], ["AU1 raised.", "AU1 raised."], [label, label], task=task, mode=mode)
            assert result["num_samples"] == 2
    strict = compute_rege(["", ""], ["a.", "b."], ["1", "1"], task="au", mode="strict")
    assert strict["s_ge"] == 0.0 and strict["num_rouge_failures"] == 2
    paper = compute_rege(["", ""], ["a.", "b."], ["1", "1"], task="au", mode="paper")
    assert math.isnan(paper["s_ge"])  # official mean over no ROUGE value


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(predictions=["a", "b"], references=["a"], labels=["1"], task="au"), "same length"),
        (dict(predictions=["a", None], references=["a", "b"], labels=["1", "2"], task="au"), r"predictions\[1\]"),
        (dict(predictions=["a"], references=[3], labels=["1"], task="au"), r"references\[0\]"),
        (dict(predictions="abc", references="abc", labels="abc", task="au"), "predictions must be a list"),
        (dict(predictions=[], references=[], labels=[], task="au"), "empty"),
        (dict(predictions=["a"], references=["a"], labels=["Joy"], task="emotion"), r"labels\[0\].*emotion label"),
        (dict(predictions=["a"], references=["a"], labels=[9], task="emotion"), r"labels\[0\]"),
        (dict(predictions=["a"], references=["a"], labels=[4], task="au"), r"labels\[0\].*AU label"),
        (dict(predictions=["a"], references=["a"], labels=["1, x"], task="au", mode="strict"), r"labels\[0\]"),
        (dict(predictions=["a"], references=["a"], labels=["1"], task="valence"), "Unknown task"),
        (dict(predictions=["a"], references=["a"], labels=["1"], task="au", mode="official"), "Unknown mode"),
        (dict(predictions=["a"], references=["a"], labels=["1"], task="au", au_set="ck"), "Unknown au_set"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_rege(**kwargs)


# ---------------------------------------------------------------------------------------------------- fast ROUGE-L


def _random_text(rng, vocab):
    parts = []
    for _ in range(rng.randint(0, 40)):
        r = rng.random()
        if r < 0.12:
            parts.append(".")
        elif r < 0.17:
            parts.append("  ")
        elif r < 0.22:
            parts.append(". ")
        else:
            parts.append(rng.choice(vocab) + rng.choice([" ", " ", "\n", "\t", ""]))
    return "".join(parts)


def test_fast_rouge_l_matches_package_on_random_texts():
    rng = random.Random(1234)
    vocab = ["the", "The", "a", "brow", "AU1", "smile,", "eyes", "raised", "lip", "is", "of", "and", "é"]
    failures = 0
    for trial in range(4000):
        if trial % 4 == 0:  # longer, sentence-like texts with many repeated tokens (tie-breaking in the LCS)
            words = [f"t{k}" for k in range(rng.randint(2, 25))]
            make = lambda: ". ".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
                                     for _ in range(rng.randint(1, 5)))  # fmt: skip
            prediction, reference = make(), make()
        else:
            prediction, reference = _random_text(rng, vocab), _random_text(rng, vocab)
        try:
            expected = package_rouge_l(prediction, reference)
        except ValueError:
            failures += 1
            with pytest.raises(RougeError):
                rouge_l_f(prediction, reference)
            continue
        assert rouge_l_f(prediction, reference) == expected, (prediction, reference)
    assert 50 < failures < 1000  # the edge cases were exercised


@pytest.mark.parametrize(
    "prediction,reference",
    [("", "a."), ("a.", ""), ("...", "a"), (" . ", "a"), ("a", " "), ("A b. c", "a B. c"), ("x y", "z w")],
)
def test_fast_rouge_l_edge_cases(prediction, reference):
    try:
        expected = package_rouge_l(prediction, reference)
    except ValueError:
        with pytest.raises(RougeError):
            rouge_l_f(prediction, reference)
    else:
        assert rouge_l_f(prediction, reference) == expected


def test_traceback_steps_match_package_recursion():
    """The step count used for the recursion emulation equals the package's recursive `_recon` path length."""
    rouge_score = pytest.importorskip("rouge.rouge_score")

    rng = random.Random(7)
    for _ in range(200):
        vocab = [f"w{k}" for k in range(rng.randint(1, 8))]
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 30))]
        hyp = [rng.choice(vocab) for _ in range(rng.randint(1, 30))]
        table = rouge_score._lcs(ref, hyp)
        i, j, steps, tokens = len(ref), len(hyp), 0, set()
        while i > 0 and j > 0:  # the package's _recon, unrolled
            if ref[i - 1] == hyp[j - 1]:
                tokens.add(ref[i - 1])
                i, j = i - 1, j - 1
            elif table[i - 1, j] > table[i, j - 1]:
                i -= 1
            else:
                j -= 1
            steps += 1
        assert _lcs_tokens(ref, hyp) == (tokens, steps)
        assert tokens == set(rouge_score._recon_lcs(ref, hyp)._ngrams)


OFFICIAL_CHAIN = textwrap.dedent(
    """
    import json, sys
    from rouge import Rouge

    def cal_rouge(reference, prediction):  # the official script's call chain, at its depth
        rouger = Rouge()
        scores = rouger.get_scores(prediction, reference, avg=True)
        return scores['rouge-l']['f']

    def eval():
        pairs = json.load(open(sys.argv[1]))
        out = []
        for prediction, reference in pairs:
            try:
                out.append(cal_rouge(reference, prediction))
            except RecursionError:
                out.append(None)
        sys.setrecursionlimit(100000)
        exact = [cal_rouge(reference, prediction) for prediction, reference in pairs]
        print(json.dumps([out, exact]))

    if __name__ == '__main__':
        eval()
    """
)


def test_official_recursion_boundary(tmp_path):
    """Paper mode skips exactly the pairs the official script loses to RecursionError; strict mode scores them."""
    pytest.importorskip("rouge")  # the official script's call chain runs in a subprocess
    rng = random.Random(3)
    limit = OFFICIAL_MAX_TRACEBACK_STEPS
    identical = [" ".join(f"w{i}" for i in range(n)) for n in (limit, limit + 1)]
    pairs = [(text, text) for text in identical]
    wanted = {OFFICIAL_MAX_TRACEBACK_STEPS - 1, OFFICIAL_MAX_TRACEBACK_STEPS, OFFICIAL_MAX_TRACEBACK_STEPS + 1}
    vocab = [f"v{k}" for k in range(40)]
    for _ in range(5000):  # random pairs whose traceback is 989-991 steps long
        if not wanted:
            break
        ref = [rng.choice(vocab) for _ in range(rng.randint(560, 620))]
        hyp = [rng.choice(vocab) for _ in range(rng.randint(560, 620))]
        steps = _lcs_tokens(ref, hyp)[1]
        if steps in wanted:
            wanted.discard(steps)
            pairs.append((" ".join(hyp) + ". end", " ".join(ref)))
    assert not wanted, f"no random pair found with {sorted(wanted)} traceback steps"
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "official_chain.py").write_text(OFFICIAL_CHAIN)
    completed = subprocess.run([sys.executable, "official_chain.py", "pairs.json"], cwd=tmp_path, capture_output=True,
                               text=True, check=True)  # fmt: skip
    official, exact = json.loads(completed.stdout)
    assert official[0] is not None and official[1] is None  # 990 steps fit, 991 do not
    assert sum(value is None for value in official) == 2
    for (prediction, reference), expected, true_value in zip(pairs, official, exact):
        if expected is None:
            with pytest.raises(RougeError, match="recursion"):
                rouge_l_f(prediction, reference, official_recursion_limit=True)
        else:
            assert rouge_l_f(prediction, reference, official_recursion_limit=True) == expected
        assert rouge_l_f(prediction, reference) == true_value
    paper = compute_rege([p for p, _ in pairs], [r for _, r in pairs], ["1"] * len(pairs), task="au", mode="paper")
    strict = compute_rege([p for p, _ in pairs], [r for _, r in pairs], ["1"] * len(pairs), task="au", mode="strict")
    assert paper["num_rouge_failures"] == 2 and strict["num_rouge_failures"] == 0
    assert paper["s_ge"] == np.mean([v for v in official if v is not None]) * 100
    assert strict["s_ge"] == np.mean(exact) * 100


# ---------------------------------------------------------------------------------------------------- evaluate module

EVALUATE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import evaluate
    from transformers_emola.metrics import load_rege

    cases = json.load(open(sys.argv[1]))
    by_path = evaluate.load(sys.argv[2])
    by_helper = load_rege()
    out = []
    for case in cases:
        kwargs = case["kwargs"]
        out.append([by_path.compute(**case["inputs"], **kwargs), by_helper.compute(**case["inputs"], **kwargs)])
    print("RESULT" + json.dumps(out))
    """
)


def test_evaluate_module_offline_matches_function(tmp_path):
    cases = [
        {"inputs": {"predictions": AU_PREDICTIONS, "references": AU_REFERENCES, "labels": AU_LABELS},
         "kwargs": {"task": "au", "mode": "paper"}},
        {"inputs": {"predictions": AU_PREDICTIONS, "references": AU_REFERENCES, "labels": AU_LABELS},
         "kwargs": {"task": "au", "mode": "strict", "au_set": "bp4d"}},
        {"inputs": {"predictions": EMOTION_PREDICTIONS, "references": EMOTION_REFERENCES,
                    "labels": ["Sadness", "Sadness", "Neutral", "Happiness", "Happiness"]},
         "kwargs": {"task": "emotion", "mode": "paper"}},
        {"inputs": {"predictions": EMOTION_PREDICTIONS, "references": EMOTION_REFERENCES, "labels": [1, 1, 4, 0, 0]},
         "kwargs": {"task": "emotion", "mode": "strict"}},
        # every label form compute_rege takes, mixed in one call: ints, digit strings, names, AU lists
        {"inputs": {"predictions": EMOTION_PREDICTIONS, "references": EMOTION_REFERENCES,
                    "labels": [1, "Sadness", "4", 0, "happiness"]},
         "kwargs": {"task": "emotion", "mode": "strict"}},
        {"inputs": {"predictions": AU_PREDICTIONS, "references": AU_REFERENCES,
                    "labels": [[int(au) for au in label.split(", ")] if i % 2 else label
                               for i, label in enumerate(AU_LABELS)]},
         "kwargs": {"task": "au", "mode": "strict"}},
    ]  # fmt: skip
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "run.py").write_text(EVALUATE_SCRIPT)
    python_path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH=python_path)  # fmt: skip
    completed = subprocess.run([sys.executable, "run.py", "cases.json", str(REGE_MODULE_PATH.parent)], cwd=tmp_path,
                               env=env, capture_output=True, text=True)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.split("RESULT", 1)[1])
    for case, (by_path, by_helper) in zip(cases, results):
        expected = json.loads(json.dumps(compute_rege(**case["inputs"], **case["kwargs"])))
        assert by_path == expected
        assert by_helper == expected
    assert results[0][0]["s_re"] == pytest.approx((2 / 3 + 3) / 6 * 100)
    # the same labels spelt differently score the same
    assert results[4][0] == results[3][0]
    assert results[5][0] == json.loads(json.dumps(compute_rege(AU_PREDICTIONS, AU_REFERENCES, AU_LABELS, task="au",
                                                               mode="strict")))


def test_evaluate_module_imports_shared_code():
    source = REGE_MODULE_PATH.read_text()
    assert "from transformers_emola.metrics.scoring import compute_rege" in source
    functions = [line.strip() for line in source.splitlines() if line.strip().startswith("def ")]
    # no duplicated scoring code: the inputs, the label encoding that lets every label form through, the call
    assert [f.split("(")[0] for f in functions] == ["def _encode_label", "def _info", "def add_batch", "def add",
                                                    "def _compute"]
    card = (REGE_MODULE_PATH.parent / "README.md").read_text()
    for heading in ("## How to Use", "### Inputs", "### Output Values", "### Examples", "## Limitations"):
        assert heading in card


# ---------------------------------------------------------------------------------------------------- FER / folds


def test_compute_fer_accuracy():
    predictions = ["Surprise", "fear", "Anger ", "Sadness.", 4, "The person looks sad."]
    labels = ["Surprise", "Fear", 3, "sadness", "Neutral", 1]
    paper = compute_fer_accuracy(predictions, labels, mode="paper")
    # exact capitalised names only (stripped): "fear", "Sadness." and the sentence are wrong
    assert paper["accuracy"] == pytest.approx(300 / 6)
    assert paper["num_unrecognized"] == 3 and paper["num_samples"] == 6
    strict = compute_fer_accuracy(predictions, labels, mode="strict")
    assert strict["accuracy"] == 100.0 and strict["num_unrecognized"] == 0
    assert strict["per_class_accuracy"]["sadness"] == 100.0 and strict["per_class_accuracy"]["disgust"] is None
    assert np.array(strict["confusion_matrix"]).trace() == 6
    with pytest.raises(ValueError, match="same length"):
        compute_fer_accuracy(["Fear"], [])
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        compute_fer_accuracy(["Fear"], ["Contempt"])
    with pytest.raises(ValueError, match=r"pred_labels\[0\]"):
        compute_fer_accuracy([9], ["Fear"])


def test_compute_au_f1_folds():
    folds = [["AU1 AU2", "AU4"], ["AU1", "AU4"], ["AU2", "AU1 AU4"]]
    labels = [["1, 2", "4"], ["1", "2, 4"], ["2", "1"]]
    strict = compute_au_f1_folds(folds, labels, "disfa", mode="strict")
    # fold 1: AU1 100, AU2 100, AU4 100; fold 2: AU1 100, AU2 0, AU4 100; fold 3: AU1 100, AU2 100, AU4 0
    assert strict["fold_f1"] == pytest.approx([100.0, 200 / 3, 200 / 3])
    assert strict["f1"] == pytest.approx((100 + 200 / 3 + 200 / 3) / 3)
    assert strict["per_au_f1"][1] == 100.0 and strict["per_au_f1"][2] == pytest.approx(200 / 3)
    assert strict["per_au_f1"][6] is None and strict["num_folds"] == 3
    # paper: the official three-fold script cannot average AUs that are single-class in a fold
    with pytest.raises(ValueError, match="single class"):
        compute_au_f1_folds(folds, labels, "disfa", mode="paper")
    texts = [["AU1", "AU1", "AU2"], ["AU1 AU2", "AU2", "AU1"], ["AU1", "AU2", "AU1 AU2"]]
    gold = [["1", "1, 2", "2"], ["1", "2", "1, 2"], ["1, 2", "2", "2"]]
    # fold 2 (AU1: predicted [1, 0, 1], labelled [1, 0, 1]) is perfect; lists of ints work as predictions too
    as_ints = [[[1], [1], [2]], [[1, 2], [2], [1]], [[1], [2], [1, 2]]]
    two_au = compute_au_f1_folds(texts, gold, "faba", mode="strict")
    assert two_au["per_fold_per_au_f1"][1][1] == 100.0
    assert compute_au_f1_folds(as_ints, gold, "faba", mode="strict") == two_au
    with pytest.raises(ValueError, match="folds"):
        compute_au_f1_folds(texts, gold[:2], "faba")
    with pytest.raises(ValueError, match="au_set"):
        compute_au_f1_folds(texts, gold, "ckplus")


def test_compute_au_f1_folds_paper_rounding():
    from transformers_emola.faba import AUSet

    two = AUSet("two", (1, 2), (1, 2))
    texts = [["AU1", "AU1 AU2", "AU2", "AU1"], ["AU1 AU2", "AU2", "AU1"], ["AU1", "AU2", "AU1 AU2"]]
    gold = [["1", "1, 2", "1", "2"], ["1", "2, 1", "1, 2"], ["1, 2", "2", "2"]]
    paper = compute_au_f1_folds(texts, gold, two, mode="paper")
    strict = compute_au_f1_folds(texts, gold, two, mode="strict")
    for fold_paper, fold_strict in zip(paper["per_fold_per_au_f1"], strict["per_fold_per_au_f1"]):
        for au in (1, 2):
            assert fold_paper[au] == float(f"{fold_strict[au]:.2f}")
    assert paper["per_fold_per_au_f1"][0][1] == 66.67  # fold 1, AU1: TP 2, FP 1, FN 1
    assert paper["f1"] == pytest.approx(np.mean([np.mean(list(f.values())) for f in paper["per_fold_per_au_f1"]]))
