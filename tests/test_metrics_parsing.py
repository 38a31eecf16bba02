"""AU and emotion text parsers: paper mode matches the official FABA-Bench rules (hand-checked cases), strict mode
applies the documented fixes."""

import pytest

from transformers_emola.metrics import (
    AU_NAMES,
    AU_SETS,
    EMOTION_KEYWORDS,
    EMOTIONS,
    FABA_AUS,
    PAPER_EMOTION_KEYWORDS,
    SCORED_AUS,
    emotion_label_to_index,
    parse_affect,
    parse_au_label,
    parse_aus,
    parse_emotion,
)


def paper(text):
    return parse_emotion(text, mode="paper")


def strict(text):
    return parse_emotion(text, mode="strict")


# ---------------------------------------------------------------------------------------------------- constants


def test_au_constants_match_official_script():
    assert FABA_AUS == (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26, 27, 43)
    assert SCORED_AUS == (1, 2, 4, 5, 6, 10, 12, 17, 24, 25, 26, 43)
    assert AU_SETS["faba"].scored == SCORED_AUS and AU_SETS["faba"].index == FABA_AUS
    assert AU_SETS["disfa"].scored == (1, 2, 4, 6, 9, 12, 25, 26)
    assert AU_SETS["bp4d"].scored == (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
    assert AU_SETS["gft"].scored == (1, 2, 4, 6, 10, 12, 14, 15, 23, 24)
    assert 18 in AU_SETS["gft"].index  # the official GFT index has AU18, unscored
    assert AU_SETS["emotionet"].scored == (1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26, 43)
    for au_set in AU_SETS.values():
        assert set(au_set.scored) <= set(au_set.index) <= set(AU_NAMES)
    assert AU_NAMES[1] == "Inner Brow Raiser" and AU_NAMES[12] == "Lip Corner Puller" and AU_NAMES[43] == "Eyes Closed"
    assert len(AU_NAMES) == 21


def test_emotion_constants():
    assert EMOTIONS == ("happiness", "sadness", "surprise", "anger", "neutral", "disgust", "fear")
    # Official lists, as published: "happy" and "joyful" are there, "sad"/"angry"/"scared"/"afraid" are not.
    paper_words = {w for words in PAPER_EMOTION_KEYWORDS.values() for w in words}
    assert {"happy", "joyful", "sadness", "anger"} <= paper_words
    assert not {"sad", "angry", "scared", "afraid", "fearful"} & paper_words
    assert sum(len(v) for v in PAPER_EMOTION_KEYWORDS.values()) == 20 + 9 + 15 + 12 + 9 + 13 + 7
    for emotion in EMOTIONS:  # strict lexicon extends the official one
        assert set(PAPER_EMOTION_KEYWORDS[emotion]) <= set(EMOTION_KEYWORDS[emotion])
    assert "sad" in EMOTION_KEYWORDS["sadness"] and "afraid" in EMOTION_KEYWORDS["fear"]


@pytest.mark.parametrize(
    "label,index",
    [(0, 0), (6, 6), ("3", 3), (" 4 ", 4), ("Happiness", 0), ("sadness", 1), ("FEAR", 6), ("Neutral", 4)],
)
def test_emotion_label_to_index(label, index):
    assert emotion_label_to_index(label) == index


@pytest.mark.parametrize("label", [7, -1, "7", "joy", "", None, 2.5, True, [1]])
def test_emotion_label_to_index_rejects_unknown(label):
    with pytest.raises(ValueError, match="emotion label"):
        emotion_label_to_index(label)


# ---------------------------------------------------------------------------------------------------- AU parsing


@pytest.mark.parametrize(
    "text,expected",
    [
        ("AU1 and AU2 are raised.", [1, 2]),
        ("AU4 is not visible.", [4]),  # negation ignored by the official parser
        ("AU06 (Cheek Raiser) and AU12.", [12]),  # "06" is not in the index
        ("AU45 blink, AU3, AU18.", []),  # outside the FABA index
        ("AU12AU25 XAU6", [6, 12, 25]),  # bare regex AU(\d+)
        ("au12 and Au6", []),  # case-sensitive
        ("", []),
    ],
)
def test_parse_aus_paper(text, expected):
    assert parse_aus(text, mode="paper") == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("AU06 (Cheek Raiser), AU 7 and au-10 are active.", [6, 7, 10]),
        ("AU12 is active. AU4 is not present.", [12]),
        ("AU1 and AU2 are raised, AU4 is not visible.", [1, 2]),
        ("AU1, AU2, and AU4 are not activated. There is no AU9, and AU12 is active.", [12]),
        ("AU1 (Inner Brow Raiser), AU2 (Outer Brow Raiser), and AU5 (Upper Lid Raiser) are present.", [1, 2, 5]),
        ("AU6 and AU12 are active, but AU15 isn't.", [6, 12]),
        ("Without AU4, the face shows AU25.", [25]),
        ("AU17 is absent; AU24 is visible.", [24]),
        ("AU45 and AU012 and GAU6", [12]),
        ("", []),
    ],
)
def test_parse_aus_strict(text, expected):
    assert parse_aus(text, mode="strict") == expected


def test_parse_aus_respects_au_set():
    text = "AU5, AU9 and AU18 are active."
    assert parse_aus(text, mode="paper", au_set="faba") == [5, 9]
    assert parse_aus(text, mode="paper", au_set="disfa") == [9]
    assert parse_aus(text, mode="strict", au_set="GFT") == [5, 9, 18]


def test_parse_au_label():
    assert parse_au_label("1, 2, 4", mode="paper") == [1, 2, 4]
    assert parse_au_label("1,2", mode="paper") == []  # official split on ", " only
    assert parse_au_label("01, 2", mode="paper") == [2]
    assert parse_au_label("", mode="paper") == []
    assert parse_au_label("1,2; AU4 +AU06", mode="strict") == [1, 2, 4, 6]
    assert parse_au_label("", mode="strict") == []
    assert parse_au_label([12, 1, 45], mode="paper") == [1, 12]
    assert parse_au_label("1, 9", mode="strict", au_set="bp4d") == [1]
    with pytest.raises(ValueError, match="not an AU number"):
        parse_au_label("1, two", mode="strict")
    with pytest.raises(ValueError, match="AU label"):
        parse_au_label(12, mode="paper")
    with pytest.raises(ValueError, match="AU label"):
        parse_au_label([1, "x"], mode="paper")


@pytest.mark.parametrize("bad", [None, 5, b"AU1"])
def test_parsers_reject_non_strings(bad):
    with pytest.raises(ValueError, match="must be a string"):
        parse_aus(bad)
    with pytest.raises(ValueError, match="must be a string"):
        parse_emotion(bad)


def test_unknown_mode_and_au_set():
    with pytest.raises(ValueError, match="mode"):
        parse_aus("AU1", mode="official")
    with pytest.raises(ValueError, match="mode"):
        parse_emotion("happy.", mode="lenient")
    with pytest.raises(ValueError, match="au_set"):
        parse_aus("AU1", au_set="ck+")


# ---------------------------------------------------------------------------------------------------- paper emotion


@pytest.mark.parametrize(
    "text,expected",
    [
        # the table of the reference notes
        ("The person looks sad.", "happiness"),
        ("The person appears angry, with furrowed brows.", "happiness"),
        ("The person seems scared and afraid.", "happiness"),
        ("The eyes are wide, which may indicate surprise or fear.", "surprise"),
        # keyword listed under two emotions: the earlier in EMOTIONS order wins
        ("An expression of curiosity.", "surprise"),
        ("The person looks displeased.", "anger"),
        ("There is some discomfort.", "sadness"),
        # substring negation drops the whole sentence ("nose", "normal", "another")
        ("The person shows disgust, with a wrinkled nose. There is a slight smile.", "happiness"),
        ("The person shows surprise, with a normal brow position. The mouth forms a smile.", "happiness"),
        ("Another sign is anger. The face is relaxed.", "happiness"),
        # everything dropped -> the full text is read, negated words included
        ("There is no sadness.", "sadness"),
        # "isn't " needs the trailing space
        ("Calm it isn't.", "neutral"),
        ("The face isn't calm. It shows anger.", "anger"),
        # only "." and "?" split sentences for the negation filter, "!" does not
        ("Joy! No anger here. The face shows sadness.", "sadness"),
        ("Is this calm? It is not. The face shows anger.", "neutral"),
        # "e.g." and "Dr." do not end a sentence in the negation filter
        ("The person is calm, e.g. not tense. They show happiness.", "happiness"),
        ("Dr. Calm is not here. The face shows sadness, with some anger and anger.", "sadness"),
        # first sentence without keyword -> count the rest; a double-listed word counts for both emotions
        ("The face is interesting. It shows curiosity and fear.", "fear"),
        # tie -> first in EMOTIONS order (sadness before anger)
        ("Look here. There is anger and sadness.", "sadness"),
        ("Look here. It is calm.", "neutral"),
        ("Look here.", "happiness"),  # no keyword at all -> happiness
        # a whitespace after "." inside the first line is a split point for the filter, and words are \w+ tokens
        ("The person is not calm.\nThe face shows anger.", "anger"),
        ("The person's smile-like expression.", "happiness"),
    ],
)
def test_parse_emotion_paper(text, expected):
    parsed = paper(text)
    assert parsed.name == expected
    assert not parsed.fallback


def test_parse_emotion_paper_rules_reported():
    assert paper("The person looks sad.").rule == "default"
    first = paper("It shows joy and anger. Sadness.")
    assert (first.rule, first.keyword, first.name) == ("first_sentence", "joy", "happiness")
    majority = paper("Look. Anger, anger and sadness.")
    assert (majority.rule, majority.name) == ("majority", "anger")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The expression is neutral", "neutral"),  # no terminator: the official code crashes
        ("", "happiness"),
        ("The face shows\nsadness. It is calm.", "sadness"),  # "." does not cross the newline
        ("nothing here", "happiness"),
    ],
)
def test_parse_emotion_paper_fallback(text, expected):
    parsed = paper(text)
    assert parsed.fallback
    assert parsed.name == expected


# ---------------------------------------------------------------------------------------------------- strict emotion


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The person looks sad.", "sadness"),
        ("The person appears angry, with furrowed brows.", "anger"),
        ("The person seems scared and afraid.", "fear"),
        ("The person shows disgust, with a wrinkled nose. There is a slight smile.", "disgust"),
        ("The person shows surprise, with a normal brow position. The mouth forms a smile.", "surprise"),
        ("Another sign is anger. The face is relaxed.", "anger"),
        ("The person is not happy, but rather sad.", "sadness"),
        ("The person appears happy, not sad.", "happiness"),
        ("The person is not happy. They look sad and tired.", "sadness"),  # negated first sentence is skipped
        ("The expression is neutral", "neutral"),
        ("An expression of curiosity.", "surprise"),
        ("Look here. There is anger and sadness.", "anger"),  # tie -> first mentioned
        ("Look here. Sadness, anger and anger.", "anger"),  # majority
        ("The person is smiling joyfully; she is delighted.", "happiness"),
    ],
)
def test_parse_emotion_strict(text, expected):
    assert strict(text).name == expected


@pytest.mark.parametrize("text", ["", "The expression is hard to read.", "There is no sadness.", "Not angry."])
def test_parse_emotion_strict_unparsed(text):
    parsed = strict(text)
    assert parsed.index is None and parsed.unparsed and parsed.rule == "unparsed"


def test_parse_emotion_strict_records_negated_keywords():
    parsed = strict("The person isn't happy and shows no anger, but looks sad.")
    assert parsed.name == "sadness"
    assert parsed.negated_keywords == ["happy", "anger"]
    assert parsed.sentence == "The person isn't happy and shows no anger, but looks sad."


# ---------------------------------------------------------------------------------------------------- parse_affect


def test_parse_affect_both():
    text = "AU6 and AU12 are active. AU4 is not present. The person looks happy, not angry."
    analysis = parse_affect(text)
    assert [(m.number, m.name, m.sentence) for m in analysis.aus] == [
        (6, "Cheek Raiser", "AU6 and AU12 are active."),
        (12, "Lip Corner Puller", "AU6 and AU12 are active."),
    ]
    assert analysis.au_numbers == [6, 12]
    assert analysis.negated_aus == [4]
    assert analysis.emotion.name == "happiness"
    assert analysis.emotion.sentence == "The person looks happy, not angry."
    assert analysis.negated_emotion_keywords == ["angry"]
    assert analysis.unparsed is False
    as_dict = analysis.to_dict()
    assert as_dict["aus"][0] == {"number": 6, "name": "Cheek Raiser", "sentence": "AU6 and AU12 are active."}
    assert as_dict["emotion"] == "happiness" and as_dict["negated_aus"] == [4]


def test_parse_affect_tasks_and_flags():
    au_only = parse_affect("AU06 is visible; the person looks sad.", task="au")
    assert au_only.au_numbers == [6] and au_only.emotion is None and not au_only.unparsed
    emotion_only = parse_affect("AU06 is visible; the person looks sad.", task="emotion")
    assert emotion_only.aus == [] and emotion_only.emotion.name == "sadness"
    assert parse_affect("No AU is visible.", task="au").unparsed
    assert parse_affect("Hard to say.", task="emotion").unparsed
    assert not parse_affect("Hard to say, AU4.", task="both").unparsed
    # an AU both negated and asserted is asserted, not listed as negated
    mixed = parse_affect("AU4 is not strong. AU4 is visible.", task="au")
    assert mixed.au_numbers == [4] and mixed.negated_aus == []
    with pytest.raises(ValueError, match="task"):
        parse_affect("AU4", task="valence")
