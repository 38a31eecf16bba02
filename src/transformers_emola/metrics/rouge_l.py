"""ROUGE-L F exactly as the PyPI `rouge` package (pltrdy/rouge 1.0.1) computes it, but fast.

FABA-Bench's S_ge is `Rouge().get_scores(prediction, reference, avg=True)["rouge-l"]["f"]`. That package builds a
Python dict per dynamic-programming table and recovers each LCS recursively, which costs ~5 ms per FABA-sized pair
(about a minute for a 10k-sample benchmark). This module reproduces its numbers bit for bit:

* "sentences" are the non-empty pieces of `text.split(".")`, each whitespace-normalised (a piece made only of
  spaces becomes the empty sentence "", whose single token is ""); tokens are `sentence.split(" ")`: case-sensitive,
  punctuation attached, no stemming;
* summary-level ROUGE-L with `exclusive=True`: m and n count *unique* tokens, and the LCS hit is the number of
  unique tokens in the union, over every (reference sentence, prediction sentence) pair, of the LCS the package's
  traceback picks (its tie-break decides which tokens are in it, so the traceback is reproduced step by step);
* `f = 2 * (p * r) / (p + r + 1e-8)` with the same operation order.

The LCS table rows are computed with the bit-parallel algorithm of Hyyrö (2004) on Python integers instead of an
O(n*m) loop; the table entry T(i, j) is recovered as `j - popcount(row_i & (2**j - 1))`.

Failures are reproduced too: an empty prediction or reference (no sentence) raises `RougeError`, and, with
`official_recursion_limit=True`, so does a sentence pair whose traceback is deeper than the package's recursive
`_recon` can go when called from the official evaluation script (see `OFFICIAL_MAX_TRACEBACK_STEPS`).
"""

from __future__ import annotations


__all__ = ["OFFICIAL_MAX_TRACEBACK_STEPS", "RougeError", "rouge_l_f", "split_rouge_sentences"]

# The package recovers each LCS with a recursive `_recon(i, j)`: one Python frame per traceback step plus one for
# the base case. The official script calls it 9 frames deep (<module>, eval, cal_rouge, Rouge.get_scores,
# _get_avg_scores, the metric lambda, rouge_l_summary_level, _union_lcs, _recon_lcs); under CPython's default
# recursion limit of 1000 a traceback of more than 990 steps raises RecursionError, which the script's bare
# `except` swallows (the sample is left out of S_ge). Measured with CPython 3.11 on that exact call chain; see
# tests/test_metrics_rege.py::test_official_recursion_boundary.
OFFICIAL_MAX_TRACEBACK_STEPS = 990


class RougeError(ValueError):
    """Raised where `rouge.Rouge().get_scores` would raise (empty text, or too deep a recursion)."""


def split_rouge_sentences(text: str) -> list[list[str]]:
    """Token lists of the package's "sentences": pieces of `text.split('.')`, whitespace-normalised."""
    return [" ".join(piece.split()).split(" ") for piece in text.split(".") if piece]


def _lcs_tokens(ref: list[str], hyp: list[str]) -> tuple[set[str], int]:
    """Tokens of the LCS the package's `_recon_lcs(ref, hyp)` returns, and the number of traceback steps.

    Rows of the LCS table are bit vectors over `hyp` positions (bit k set <=> T(i, k+1) == T(i, k)). The traceback
    replays the package's rule: on a token match go diagonally, else go up if T(i-1, j) > T(i, j-1), else left.
    """
    positions: dict[str, int] = {}
    for k, token in enumerate(hyp):
        positions[token] = positions.get(token, 0) | (1 << k)
    full = (1 << len(hyp)) - 1
    row = full
    rows = [row]
    append = rows.append
    for token in ref:
        match = positions.get(token)
        if match:
            u = row & match
            row = ((row + u) | (row - u)) & full
        append(row)

    tokens: set[str] = set()
    i, j = len(ref), len(hyp)
    steps = 0
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1]:
            tokens.add(ref[i - 1])
            i -= 1
            j -= 1
            steps += 1
            continue
        prefix = (1 << (j - 1)) - 1
        # T(i, j-1) == 0 means no match is left in ref[:i] x hyp[:j-1]: the package walks left to j == 0 from here.
        left = (j - 1) - (rows[i] & prefix).bit_count()
        up = j - (rows[i - 1] & ((prefix << 1) | 1)).bit_count()
        if up > left:
            i -= 1
            steps += 1
        elif left == 0:
            steps += j
            break
        else:
            j -= 1
            steps += 1
    return tokens, steps


def rouge_l_f(prediction: str, reference: str, official_recursion_limit: bool = False) -> float:
    """`Rouge().get_scores(prediction, reference, avg=True)['rouge-l']['f']`, bit-identical and ~100x faster.

    Args:
        prediction: generated text (the package's "hypothesis").
        reference: reference text.
        official_recursion_limit: also raise `RougeError` where the package would overflow the recursion limit when
            run by the official FABA-Bench script (only pathologically long sentences, > ~495 words each).

    Raises:
        RougeError: the prediction or the reference has no sentence (e.g. ""), or the recursion case above.

    Example:
        >>> round(rouge_l_f("the brows are raised", "the inner brows are raised"), 6)
        0.888889
    """
    hyp_sentences = split_rouge_sentences(prediction)
    ref_sentences = split_rouge_sentences(reference)
    if not hyp_sentences:
        raise RougeError("Hypothesis is empty.")
    if not ref_sentences:
        raise RougeError("Reference is empty.")

    ref_vocab = {token for sentence in ref_sentences for token in sentence}
    hyp_vocab = {token for sentence in hyp_sentences for token in sentence}
    union: set[str] = set()
    if not ref_vocab.isdisjoint(hyp_vocab):
        hyp_sets = [set(sentence) for sentence in hyp_sentences]
        for ref in ref_sentences:
            ref_set = set(ref)
            for hyp, hyp_set in zip(hyp_sentences, hyp_sets):
                deep = official_recursion_limit and len(ref) + len(hyp) - 1 > OFFICIAL_MAX_TRACEBACK_STEPS
                common = ref_set & hyp_set
                # The union only grows: a pair whose shared tokens are all in it already cannot change the result.
                if not deep and (not common or common <= union):
                    continue
                tokens, steps = _lcs_tokens(ref, hyp)
                if deep and steps > OFFICIAL_MAX_TRACEBACK_STEPS:
                    raise RougeError(
                        f"maximum recursion depth exceeded in rouge's LCS traceback ({steps} steps for a pair of "
                        f"sentences of {len(ref)} and {len(hyp)} tokens)"
                    )
                union |= tokens
    elif official_recursion_limit:
        # No shared token: the package still walks every table, which only matters for the recursion limit.
        for ref in ref_sentences:
            for hyp in hyp_sentences:
                if len(ref) + len(hyp) - 1 > OFFICIAL_MAX_TRACEBACK_STEPS:
                    _, steps = _lcs_tokens(ref, hyp)
                    if steps > OFFICIAL_MAX_TRACEBACK_STEPS:
                        raise RougeError(f"maximum recursion depth exceeded in rouge's LCS traceback ({steps} steps)")

    llcs = len(union)
    r_lcs = llcs / len(ref_vocab)
    p_lcs = llcs / len(hyp_vocab)
    return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))
