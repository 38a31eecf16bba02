"""Text parsers that turn a generated facial-affect description into action units (AUs) and an emotion class.

Two behaviours, chosen with `mode`:

* ``"paper"`` reproduces the official FABA-Bench evaluation (JackYFL/EmoLA, `emollava/eval/eval_FABA.py`) exactly,
  quirks included, so that REGE numbers are comparable with the paper: every `AU(\\d+)` mention counts (also
  "AU4 is not visible"), zero-padded "AU06" is dropped, a sentence is dropped when a negation word occurs in it as a
  *substring* ("nose", "normal", "another"), bare "sad" / "angry" / "scared" are not keywords, and text without a
  keyword is read as happiness.
* ``"strict"`` fixes those: negation is detected per clause and by whole word, negated AU mentions are ignored,
  "AU06" is AU 6, the keyword lexicon is extended, and text without a keyword is *unparsed* (`index is None`)
  instead of silently becoming happiness.

The same parsers serve model post-processing (`parse_affect`). No torch, no model code here.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field

from ..faba import AU_NAMES, EMOTIONS, TASKS, AUSet, normalize_au_set


__all__ = [
    "AUMention",
    "AffectAnalysis",
    "EMOTION_KEYWORDS",
    "PAPER_EMOTION_KEYWORDS",
    "ParsedEmotion",
    "emotion_label_to_index",
    "parse_affect",
    "parse_au_label",
    "parse_aus",
    "parse_emotion",
]

MODES = ("paper", "strict")



def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {list(MODES)}.")
    return mode


def _check_text(text, name: str = "text") -> str:
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a string, got {type(text).__name__}: {text!r:.80}")
    return text


_PAPER_AU_MENTION = re.compile(r"AU(\d+)")
# Strict: "AU6", "AU06", "AU 6", "au-6"; not inside a longer word ("GAU6") and not a prefix of a longer number.
_STRICT_AU_MENTION = re.compile(r"(?<![A-Za-z0-9])AU[\s\-]?0*(\d{1,3})(?!\d)", re.IGNORECASE)


def parse_aus(text: str, mode: str = "strict", au_set: str | AUSet = "faba") -> list[int]:
    """Sorted AU numbers a description asserts, restricted to the AU set's index.

    paper: every `AU(\\d+)` match whose digits spell an index entry ("AU06" is not "6"; "AU4 is not visible" counts).
    strict: "AU06"/"AU 6" are AU 6, and mentions in a negated clause ("AU4 is not present", "no AU9") are ignored.

    Example:
        >>> parse_aus("AU1 and AU06 are active, but AU4 is not present.", mode="paper")
        [1, 4]
        >>> parse_aus("AU1 and AU06 are active, but AU4 is not present.", mode="strict")
        [1, 6]
    """
    _check_text(text)
    _check_mode(mode)
    index = normalize_au_set(au_set).index
    if mode == "paper":
        allowed = {str(au): au for au in index}
        return sorted({allowed[digits] for digits in _PAPER_AU_MENTION.findall(text) if digits in allowed})
    return sorted({mention.number for mention in _strict_au_mentions(text, set(index)) if not mention.negated})


def parse_au_label(label, mode: str = "strict", au_set: str | AUSet = "faba") -> list[int]:
    """AU numbers of a ground-truth label such as "1, 2, 4" (also a list of ints), restricted to the index.

    paper: `label.split(", ")`, each piece looked up verbatim (as `AUint2Labels` does; "1,2" matches nothing).
    strict: separators `,;+` or spaces, optional "AU" prefix, leading zeros allowed; a piece that is not an AU
    number raises ValueError.
    """
    _check_mode(mode)
    index = normalize_au_set(au_set).index
    if isinstance(label, (list, tuple)):
        numbers = []
        for item in label:
            if isinstance(item, bool):
                raise ValueError(f"AU label {label!r} must hold AU numbers, got {item!r}.")
            try:
                numbers.append(operator.index(item))
            except TypeError:
                if isinstance(item, str) and mode == "strict":
                    numbers.extend(parse_au_label(item, mode, au_set))
                    continue
                if isinstance(item, str) and item.isdigit() and str(int(item)) == item:
                    numbers.append(int(item))
                    continue
                raise ValueError(f"AU label {label!r} must hold AU numbers, got {item!r}.") from None
        return sorted(set(numbers) & set(index))
    if not isinstance(label, str):
        raise ValueError(f"AU label must be a string like '1, 2, 4' or a list of ints, got {type(label).__name__}.")
    if mode == "paper":
        allowed = {str(au): au for au in index}
        return sorted({allowed[piece] for piece in label.split(", ") if piece in allowed})
    numbers = set()
    for piece in re.split(r"[\s,;+]+", label.strip()):
        if not piece:
            continue
        match = re.fullmatch(r"(?:AU)?0*(\d+)", piece, re.IGNORECASE)
        if match is None:
            raise ValueError(f"AU label {label!r}: {piece!r} is not an AU number.")
        numbers.add(int(match.group(1)))
    return sorted(numbers & set(index))


# --------------------------------------------------------------------------------------------------------------
# Emotions
# --------------------------------------------------------------------------------------------------------------


#: The official keyword lists (`emotion_list` in eval_FABA.py), verbatim, duplicates included. Note that "happy"
#: and "joyful" are listed while "sad", "angry", "scared", "afraid" and "fearful" are not.
PAPER_EMOTION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "happiness": ("happiness", "happy", "smiling", "smile", "pleasant", "content", "contentment", "relaxed",
                  "relaxation", "cheerful", "joy", "amusement", "amused", "positivity", "positive",
                  "lightheartedness", "joyful", "friendly", "warmth", "bright"),
    "neutral": ("neutral", "neutrality", "calm", "contemplative", "concerned", "thoughtful", "focused", "solemn",
                "mild"),
    "surprise": ("surprise", "surprised", "startled", "puzzled", "astonishment", "disbelief", "wonder", "curiosity",
                 "curious", "confusion", "wonder", "bewilderment", "skepticism", "excitement", "uncertainty"),
    "fear": ("fear", "shock", "anxiety", "apprehension", "tension", "panic", "alertness", "focus", "worry", "alarm",
             "curiosity", "contemplation"),
    "disgust": ("disgust", "distaste", "disgusted", "discomfort", "displeasure", "displeased", "disapproval",
                "disdain", "contempt"),
    "anger": ("anger", "mad", "irate", "outraged", "agitation", "irritated", "enraged", "annoyed", "incensed",
              "serious", "frustration", "displeased", "stern"),
    "sadness": ("sadness", "crying", "distress", "concern", "discomfort", "anguish", "somber"),
}  # fmt: skip

#: Words strict mode adds to the official lists (common adjectives and inflections the official lists miss).
_STRICT_EXTRA_KEYWORDS: dict[str, tuple[str, ...]] = {
    "happiness": ("happily", "happier", "joyous", "delighted", "delight", "glad", "pleased", "smiles", "smiled",
                  "grin", "grins", "grinning", "laugh", "laughs", "laughing", "laughter", "elated", "elation",
                  "beaming", "gleeful", "glee", "cheerfulness"),
    "sadness": ("sad", "sadly", "unhappy", "unhappiness", "sorrow", "sorrowful", "grief", "grieving", "melancholy",
                "melancholic", "depressed", "dejected", "dejection", "gloomy", "gloom", "downcast", "tearful",
                "tears", "cry", "cries", "upset", "despair", "despondent", "heartbroken", "mournful",
                "disappointed", "disappointment"),
    "surprise": ("surprising", "astonished", "astonishing", "amazed", "amazement", "stunned", "awe", "awestruck"),
    "anger": ("angry", "angrily", "furious", "fury", "rage", "raging", "irritation", "annoyance", "hostile",
              "hostility", "frustrated", "indignant", "indignation", "resentment", "resentful", "livid", "scowl",
              "scowling", "glare", "glaring"),
    "neutral": ("expressionless", "impassive", "composed", "blank", "indifferent", "indifference", "emotionless",
                "deadpan", "unexpressive"),
    "disgust": ("disgusting", "repulsed", "repulsion", "revulsion", "revolted", "aversion", "loathing",
                "repugnance"),
    "fear": ("scared", "afraid", "fearful", "frightened", "fright", "terrified", "terror", "horror", "horrified",
             "anxious", "nervous", "nervousness", "worried", "panicked", "alarmed", "dread", "fearfully"),
}  # fmt: skip

#: The strict lexicon: official lists plus the extra words, per emotion.
EMOTION_KEYWORDS: dict[str, tuple[str, ...]] = {
    emotion: tuple(dict.fromkeys(PAPER_EMOTION_KEYWORDS[emotion] + _STRICT_EXTRA_KEYWORDS[emotion]))
    for emotion in EMOTIONS
}


def _keyword_table(lexicon: dict[str, tuple[str, ...]]) -> dict[str, tuple[int, ...]]:
    """word -> class indices listing it, in EMOTIONS order (the official loops test emotions in that order)."""
    table: dict[str, list[int]] = {}
    for index, emotion in enumerate(EMOTIONS):
        for word in dict.fromkeys(lexicon[emotion]):
            table.setdefault(word, []).append(index)
    return {word: tuple(indices) for word, indices in table.items()}


_PAPER_KEYWORDS = _keyword_table(PAPER_EMOTION_KEYWORDS)
_STRICT_KEYWORDS = {word: indices[0] for word, indices in _keyword_table(EMOTION_KEYWORDS).items()}

_EMOTION_NAME_TO_INDEX = {name: index for index, name in enumerate(EMOTIONS)}


def emotion_label_to_index(label) -> int:
    """Class index (0-6, EMOTIONS order) of an int, a digit string or a name such as "Sadness" (case-insensitive).

    Example:
        >>> emotion_label_to_index("Sadness"), emotion_label_to_index(3), emotion_label_to_index("4")
        (1, 3, 4)
    """
    if isinstance(label, bool):
        raise ValueError(f"Unknown emotion label {label!r}; expected 0-6 or one of {list(EMOTIONS)}.")
    if isinstance(label, str):
        key = label.strip()
        if key.lstrip("+-").isdigit():
            index = int(key)
        elif key.lower() in _EMOTION_NAME_TO_INDEX:
            return _EMOTION_NAME_TO_INDEX[key.lower()]
        else:
            raise ValueError(f"Unknown emotion label {label!r}; expected 0-6 or one of {list(EMOTIONS)}.")
    else:
        try:
            index = operator.index(label)
        except TypeError:
            raise ValueError(
                f"Unknown emotion label {label!r} ({type(label).__name__}); expected 0-6 or one of {list(EMOTIONS)}."
            ) from None
    if not 0 <= index < len(EMOTIONS):
        raise ValueError(f"Unknown emotion label {label!r}; class indices run from 0 to {len(EMOTIONS) - 1}.")
    return index


@dataclass
class ParsedEmotion:
    """The emotion read from a description.

    Attributes:
        index: class index in EMOTIONS order, or None when strict parsing found no keyword (paper mode never gives
            None: no keyword means happiness, as in the official script).
        keyword: the word that decided, or None.
        sentence: the sentence that decided (first-sentence rule) or holds the first mention of the winning class
            (majority rule); None when no keyword was found.
        rule: "first_sentence", "majority", "default" (paper: no keyword -> happiness) or "unparsed" (strict).
        fallback: paper mode only: the official parser would have crashed (no ".", "!" or "?" on the first line of
            the kept text); the whole text was read as the first sentence instead.
        negated_keywords: strict mode only: keywords ignored because their clause is negated.
    """

    index: int | None
    keyword: str | None = None
    sentence: str | None = None
    rule: str = "default"
    fallback: bool = False
    negated_keywords: list[str] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        return None if self.index is None else EMOTIONS[self.index]

    @property
    def unparsed(self) -> bool:
        return self.index is None


# Official sentence split (`remove_neg_sentences`): at a whitespace character that follows "." or "?", unless the
# four characters before it look like "e.g." (word . word any) or the three before it like "Mr." (Capital lower .).
_PAPER_SENTENCE_BOUNDARY = re.compile(
    r"""
    (?<!\w\.\w.)        # not after an abbreviation such as "e.g." / "i.e."
    (?<![A-Z][a-z]\.)   # not after a title such as "Mr." / "Dr."
    (?<=\.|\?)          # right after a full stop or a question mark
    \s                  # the whitespace that is dropped
    """,
    re.VERBOSE,
)
# Substrings that make the official parser drop a whole sentence ("no" also hits "nose", "normal", "another").
_PAPER_NEGATION_SUBSTRINGS = ("not", "no", "isn't ", "nothing", "cannot", "won't", "shouldn't", "neither", "nor")
# Official first sentence: up to the first ".", "!" or "?" on the first line ("." does not match a newline).
_PAPER_FIRST_SENTENCE = re.compile(r"^(.*?)[.!?]")
_WORD = re.compile(r"\b\w+\b")


def _paper_positive_text(text: str) -> str:
    sentences = _PAPER_SENTENCE_BOUNDARY.split(text)
    kept = [s for s in sentences if not any(word in s.lower() for word in _PAPER_NEGATION_SUBSTRINGS)]
    return " ".join(kept)


def _parse_emotion_paper(text: str) -> ParsedEmotion:
    positive = _paper_positive_text(text)
    if positive == "":
        positive = text
    match = _PAPER_FIRST_SENTENCE.match(positive)
    fallback = match is None
    if fallback:
        # The official script raises AttributeError here; read the whole text as the first sentence instead.
        first, remaining = positive, ""
    else:
        first, remaining = match.group(1), positive[match.end() :]
    for word in _WORD.findall(first.lower()):
        indices = _PAPER_KEYWORDS.get(word)
        if indices:
            return ParsedEmotion(indices[0], keyword=word, sentence=first, rule="first_sentence", fallback=fallback)
    counts = [0] * len(EMOTIONS)
    for word in _WORD.findall(remaining.lower()):
        for index in _PAPER_KEYWORDS.get(word, ()):  # a word listed under two emotions counts for both
            counts[index] += 1
    best = max(range(len(EMOTIONS)), key=counts.__getitem__)  # first maximum: no hit at all -> happiness
    if counts[best] == 0:
        return ParsedEmotion(best, rule="default", fallback=fallback)
    return ParsedEmotion(best, rule="majority", fallback=fallback)


# ---- strict segmentation -------------------------------------------------------------------------------------

# Sentence ends: ".", "!" or "?" followed by whitespace or the end, or a line break. Decimal points stay inside.
_STRICT_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+|$)|\n+")
# Clause boundaries inside a sentence: ",", ";", ":" and the contrastive conjunctions.
_STRICT_CLAUSE_BOUNDARY = re.compile(r"[,;:]|\s+(?:but|however|whereas|while|although|though|yet)\b", re.IGNORECASE)
# What is left of a bare list fragment such as "AU1 (Inner Brow Raiser), AU2" once its AUs are removed.
_LIST_FILLER = re.compile(r"\([^)]*\)|(?<![A-Za-z0-9])AU[\s\-]?\d+|\b(?:and|or|also|as well as)\b|[\W_]+",
                          re.IGNORECASE)  # fmt: skip
_STRICT_TOKEN = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_NEGATION_WORDS = frozenset(
    {"not", "no", "never", "none", "nothing", "neither", "nor", "cannot", "without", "absent", "absence", "lack",
     "lacks", "lacking", "nobody", "nowhere"}
)  # fmt: skip


def _is_negation(token: str) -> bool:
    return token in _NEGATION_WORDS or token.endswith(("n't", "n\u2019t"))


@dataclass(frozen=True)
class _Clause:
    sentence_index: int
    sentence: str
    start: int  # offset of the clause in the text
    text: str
    negated: bool


def _strict_clauses(text: str) -> list[_Clause]:
    clauses = []
    sentence_start = 0
    sentence_index = 0
    boundaries = [(m.start(), m.end()) for m in _STRICT_SENTENCE_END.finditer(text)] + [(len(text), len(text))]
    for end, next_start in boundaries:
        sentence = text[sentence_start:end]
        if sentence.strip():
            clause_start = 0
            cuts = [(m.start(), m.end()) for m in _STRICT_CLAUSE_BOUNDARY.finditer(sentence)]
            for cut_start, cut_end in cuts + [(len(sentence), len(sentence))]:
                piece = sentence[clause_start:cut_start]
                if piece.strip():
                    tokens = _STRICT_TOKEN.findall(piece.lower())
                    negated = any(_is_negation(token) for token in tokens)
                    clauses.append(_Clause(sentence_index, sentence.strip(), sentence_start + clause_start, piece,
                                           negated))  # fmt: skip
                clause_start = cut_end
            sentence_index += 1
        sentence_start = next_start
        if next_start >= len(text):
            break
    # A bare AU list item ("AU1 (Inner Brow Raiser)") shares the predicate of the clause after it: in "AU1, AU2,
    # and AU4 are not active" the negation covers AU1 and AU2 too, while "no AU9, and AU12 is active" keeps AU12.
    for k in range(len(clauses) - 2, -1, -1):
        clause, after = clauses[k], clauses[k + 1]
        if after.sentence_index == clause.sentence_index and not _LIST_FILLER.sub("", clause.text):
            clauses[k] = _Clause(clause.sentence_index, clause.sentence, clause.start, clause.text, after.negated)
    return clauses


@dataclass(frozen=True)
class _StrictAUMention:
    number: int
    sentence: str
    negated: bool


def _strict_au_mentions(text: str, index: set[int]) -> list[_StrictAUMention]:
    mentions = []
    for clause in _strict_clauses(text):
        for match in _STRICT_AU_MENTION.finditer(clause.text):
            number = int(match.group(1))
            if number in index:
                mentions.append(_StrictAUMention(number, clause.sentence, clause.negated))
    return mentions


def _parse_emotion_strict(text: str) -> ParsedEmotion:
    hits = []  # (sentence index, keyword, class, sentence) of non-negated mentions, in text order
    negated = []
    clauses = _strict_clauses(text)
    for clause in clauses:
        for token in _STRICT_TOKEN.findall(clause.text.lower()):
            index = _STRICT_KEYWORDS.get(token)
            if index is None:
                continue
            if clause.negated:
                negated.append(token)
            else:
                hits.append((clause.sentence_index, token, index, clause.sentence))
    if not hits:
        return ParsedEmotion(None, rule="unparsed", negated_keywords=negated)
    # The first sentence that is not wholly negated decides with its first keyword (models name the emotion
    # first) ...
    first_sentence = min(clause.sentence_index for clause in clauses if not clause.negated)
    if hits[0][0] == first_sentence:
        _, keyword, index, sentence = hits[0]
        return ParsedEmotion(index, keyword=keyword, sentence=sentence, rule="first_sentence",
                             negated_keywords=negated)  # fmt: skip
    # ... otherwise the most mentioned class wins, ties going to the one mentioned first.
    counts: dict[int, int] = {}
    first_seen: dict[int, tuple[str, str]] = {}
    for _, keyword, index, sentence in hits:
        counts[index] = counts.get(index, 0) + 1
        first_seen.setdefault(index, (keyword, sentence))
    best = max(counts, key=counts.__getitem__)  # dicts keep first-mention order, max keeps the first maximum
    keyword, sentence = first_seen[best]
    return ParsedEmotion(best, keyword=keyword, sentence=sentence, rule="majority", negated_keywords=negated)


def parse_emotion(text: str, mode: str = "strict") -> ParsedEmotion:
    """Read the emotion class (EMOTIONS order) from a description.

    paper: the official `description2emotion` - drop sentences containing a negation *substring*, take the first
    keyword of the first kept sentence, else the most counted class in the rest (first maximum in EMOTIONS order,
    so no keyword means happiness). Text the official code would crash on (no ".", "!" or "?") is read whole and
    flagged with `fallback=True`.
    strict: clauses with a whole-word negation ("not", "no", "never", "without", "...n't") are ignored; the first
    keyword of the first sentence wins, else the most mentioned class (ties: first mentioned); the lexicon is
    extended ("sad", "angry", "scared", "afraid", ...); no keyword gives `index=None` (unparsed).

    Example:
        >>> parse_emotion("The person looks sad.", mode="paper").name
        'happiness'
        >>> parse_emotion("The person looks sad.", mode="strict").name
        'sadness'
    """
    _check_text(text)
    if _check_mode(mode) == "paper":
        return _parse_emotion_paper(text)
    return _parse_emotion_strict(text)


# --------------------------------------------------------------------------------------------------------------
# Structured analysis for post-processing
# --------------------------------------------------------------------------------------------------------------


@dataclass
class AUMention:
    """An AU asserted by a description: its number, FACS name and the sentence that supports it."""

    number: int
    name: str
    sentence: str


@dataclass
class AffectAnalysis:
    """Structured reading of a description (strict parsers).

    Attributes:
        aus: asserted AUs in order of first mention (empty when `task == "emotion"`).
        emotion: the parsed emotion (None when `task == "au"`).
        negated_aus: AU numbers that were mentioned only in negated clauses ("AU4 is not present").
        negated_emotion_keywords: emotion keywords ignored because their clause is negated.
        unparsed: nothing was found for the requested task (no AU / no emotion keyword).
    """

    text: str
    task: str
    aus: list[AUMention] = field(default_factory=list)
    emotion: ParsedEmotion | None = None
    negated_aus: list[int] = field(default_factory=list)
    negated_emotion_keywords: list[str] = field(default_factory=list)
    unparsed: bool = False

    @property
    def au_numbers(self) -> list[int]:
        return sorted(mention.number for mention in self.aus)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "aus": [{"number": m.number, "name": m.name, "sentence": m.sentence} for m in self.aus],
            "emotion": None if self.emotion is None else self.emotion.name,
            "emotion_keyword": None if self.emotion is None else self.emotion.keyword,
            "negated_aus": list(self.negated_aus),
            "negated_emotion_keywords": list(self.negated_emotion_keywords),
            "unparsed": self.unparsed,
        }


_AFFECT_TASKS = (*TASKS, "both")


def parse_affect(text: str, task: str = "both", au_set: str | AUSet = "faba") -> AffectAnalysis:
    """AUs (with names and supporting sentences) and emotion of a description, with strict parsing.

    Args:
        text: the generated description.
        task: "au", "emotion" or "both".
        au_set: which AUs are recognised (default: the 20 FABA AUs).

    Example:
        >>> analysis = parse_affect("AU6 and AU12 are active. AU4 is not present. The person looks happy.")
        >>> [(m.number, m.name) for m in analysis.aus], analysis.negated_aus, analysis.emotion.name
        ([(6, 'Cheek Raiser'), (12, 'Lip Corner Puller')], [4], 'happiness')
    """
    _check_text(text)
    if task not in _AFFECT_TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {list(_AFFECT_TASKS)}.")
    analysis = AffectAnalysis(text=text, task=task)
    if task in ("au", "both"):
        index = set(normalize_au_set(au_set).index)
        seen: dict[int, AUMention] = {}
        negated: list[int] = []
        for mention in _strict_au_mentions(text, index):
            if mention.negated:
                negated.append(mention.number)
            elif mention.number not in seen:
                seen[mention.number] = AUMention(mention.number, AU_NAMES[mention.number], mention.sentence)
        analysis.aus = list(seen.values())
        analysis.negated_aus = sorted(set(negated) - set(seen))
    if task in ("emotion", "both"):
        analysis.emotion = _parse_emotion_strict(text)
        analysis.negated_emotion_keywords = list(analysis.emotion.negated_keywords)
    analysis.unparsed = {
        "au": not analysis.aus,
        "emotion": analysis.emotion is not None and analysis.emotion.unparsed,
        "both": not analysis.aus and analysis.emotion is not None and analysis.emotion.unparsed,
    }[task]
    return analysis

