"""REGE metric speed: 10,000 synthetic FABA-style (prediction, reference) pairs, paper and strict mode.

Prints, side by side in one run: `compute_rege` wall time per task and mode, the ROUGE-L share of it, and the
reference `rouge` package (`Rouge().get_scores`) timed on a subset and extrapolated, with a parity check of the fast
ROUGE-L against the package on that subset. Target: <= 10 s per `compute_rege` call on 2 CPU cores.

    PYTHONPATH=src python benchmarks/bench_rege.py [--samples 10000] [--package-subset 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

from transformers_emola.metrics import AU_NAMES, EMOTIONS, FABA_AUS, compute_rege, rouge_l_f


_OPENINGS = [
    "The person in the image displays a facial expression that suggests {emotion}.",
    "This face conveys {emotion}, as shown by several facial action units.",
    "The individual's expression appears to reflect {emotion}.",
]
_AU_SENTENCES = [
    "The {name} (AU{au}) is activated, {detail}.",
    "AU{au}, the {name}, is visible as {detail}.",
    "There is clear evidence of AU{au} ({name}), {detail}.",
]
_DETAILS = [
    "which raises the skin around the eyes",
    "creating wrinkles on the forehead",
    "pulling the corners of the mouth",
    "as the lips are slightly parted",
    "with tension around the jaw",
    "giving the eyes a narrowed look",
]
_CLOSINGS = [
    "Overall, these movements are consistent with {emotion}.",
    "Together, the features indicate a sense of {emotion} and engagement.",
    "The combination of these cues points to {emotion} rather than a neutral state.",
]
_WORDS = ["slightly", "clearly", "gently", "noticeably", "brows", "eyes", "mouth", "cheeks", "face", "expression"]


def _description(rng: random.Random, aus: list[int], emotion: str) -> str:
    sentences = [rng.choice(_OPENINGS).format(emotion=emotion)]
    for au in aus:
        template = rng.choice(_AU_SENTENCES)
        sentences.append(template.format(au=au, name=AU_NAMES[au].lower(), detail=rng.choice(_DETAILS)))
    sentences.append(rng.choice(_CLOSINGS).format(emotion=emotion))
    return " ".join(sentences)


def _perturb(rng: random.Random, text: str) -> str:
    """A plausible model output: some words dropped or replaced, sentences sometimes reordered."""
    sentences = text.split(". ")
    if rng.random() < 0.3:
        rng.shuffle(sentences)
    words = ". ".join(sentences).split(" ")
    out = []
    for word in words:
        r = rng.random()
        if r < 0.1:
            continue
        out.append(rng.choice(_WORDS) if r < 0.2 else word)
    return " ".join(out)


def synthetic_pairs(n: int, seed: int = 0):
    """n (prediction, reference, au_label, emotion_label) tuples, FABA-like lengths (~70-170 words)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        aus = sorted(rng.sample(FABA_AUS, rng.randint(3, 9)))
        emotion = rng.choice(EMOTIONS)
        reference = _description(rng, aus, emotion)
        predicted_aus = sorted(set(rng.sample(aus, max(1, len(aus) - 1)) + rng.sample(FABA_AUS, 1)))
        predicted_emotion = emotion if rng.random() < 0.6 else rng.choice(EMOTIONS)
        prediction = _perturb(rng, _description(rng, predicted_aus, predicted_emotion))
        if rng.random() < 0.01:
            prediction = ""  # a failed generation
        rows.append((prediction, reference, ", ".join(map(str, aus)), EMOTIONS.index(emotion)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--package-subset", type=int, default=300, help="pairs timed with the `rouge` package")
    args = parser.parse_args()

    rows = synthetic_pairs(args.samples)
    predictions = [r[0] for r in rows]
    references = [r[1] for r in rows]
    words = sum(len(r.split()) for r in references) / len(references)
    print(f"{args.samples} synthetic pairs, reference length {words:.0f} words on average; "
          f"python {platform.python_version()}, {os.cpu_count()} CPU(s)")  # fmt: skip

    start = time.perf_counter()
    for prediction, reference in zip(predictions, references):
        try:
            rouge_l_f(prediction, reference)
        except ValueError:
            pass
    rouge_seconds = time.perf_counter() - start

    print(f"\n{'task':<8} {'mode':<7} {'seconds':>8} {'samples/s':>10} {'S_re':>7} {'S_ge':>7} {'S_rege':>7}")
    timings = {}
    for task in ("au", "emotion"):
        labels = [r[2] if task == "au" else r[3] for r in rows]
        for mode in ("paper", "strict"):
            start = time.perf_counter()
            result = compute_rege(predictions, references, labels, task=task, mode=mode)
            seconds = time.perf_counter() - start
            timings[task, mode] = seconds
            print(f"{task:<8} {mode:<7} {seconds:>8.2f} {args.samples / seconds:>10.0f} {result['s_re']:>7.2f} "
                  f"{result['s_ge']:>7.2f} {result['s_rege']:>7.2f}")  # fmt: skip
    print(f"\nfast ROUGE-L alone: {rouge_seconds:.2f} s for {args.samples} pairs "
          f"({rouge_seconds / args.samples * 1e3:.3f} ms/pair)")  # fmt: skip

    try:
        from rouge import Rouge
    except ImportError:
        print("`rouge` package not installed: no reference timing.")
        return
    subset = list(zip(predictions, references))[: args.package_subset]
    scorer = Rouge()
    start = time.perf_counter()
    expected = []
    for prediction, reference in subset:
        try:
            expected.append(scorer.get_scores(prediction, reference, avg=True)["rouge-l"]["f"])
        except Exception:  # noqa: BLE001 - the official script swallows every ROUGE error
            expected.append(None)
    package_seconds = time.perf_counter() - start
    got = []
    for prediction, reference in subset:
        try:
            got.append(rouge_l_f(prediction, reference, official_recursion_limit=True))
        except ValueError:
            got.append(None)
    mismatches = sum(a != b for a, b in zip(expected, got))
    per_pair = package_seconds / len(subset)
    print(f"`rouge` package: {per_pair * 1e3:.3f} ms/pair on {len(subset)} pairs -> "
          f"~{per_pair * args.samples:.1f} s extrapolated to {args.samples} pairs; "
          f"speed-up of the fast path {per_pair / (rouge_seconds / args.samples):.0f}x; "
          f"bit-exact mismatches on the subset: {mismatches}")  # fmt: skip


if __name__ == "__main__":
    main()
