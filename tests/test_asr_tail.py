"""Tail finals: LocalAgreement's committed words, the checks on a tail decode, the real model."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from tests.clips import needs_testdata, read_clip
from voicebox.bench.score import normalise
from voicebox.engines.asr_checks import (
    Decoded,
    committed_prefix,
    split_committed,
    tail_problem,
)
from voicebox.engines.whisper_asr import WhisperAsrEngine

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LIBRIVOX = "librivox/sense_and_sensibility_01_austen_64kb-"


def decoded(text: str, *, avg_logprob: float = -0.2, hit_cap: bool = False) -> Decoded:
    return Decoded(
        text=text, avg_logprob=avg_logprob, no_speech_prob=0.01, hit_cap=hit_cap, resume_s=None
    )


# -- committed_prefix (LocalAgreement-2) ---------------------------------------------------


def test_committed_prefix_holds_back_the_last_agreed_word() -> None:
    previous = "Had he married a more amiable"
    latest = "Had he married a more amiable woman, he might"
    assert committed_prefix(previous, latest) == "Had he married a more"


def test_committed_prefix_ignores_case_and_punctuation_and_keeps_the_latest_spelling() -> None:
    previous = "and mr john dashwood had then leisure"
    latest = "And Mr. John Dashwood, had then pleasure to"
    assert committed_prefix(previous, latest) == "And Mr. John Dashwood, had"
    assert committed_prefix("cold hearted", "cold-hearted and") == ""  # two words vs one
    assert committed_prefix("coldhearted and rather", "cold-hearted and rather") == (
        "cold-hearted and"
    )


def test_committed_prefix_is_empty_without_two_agreed_words() -> None:
    assert committed_prefix("", "He was not") == ""
    assert committed_prefix("He was not", "") == ""
    assert committed_prefix("10", "10 of clubs") == ""
    assert committed_prefix("How do you", "Had he married") == ""
    assert committed_prefix("He was", "He was not") == "He"


def test_committed_prefix_of_identical_partials_still_holds_back_a_word() -> None:
    text = "Eight of spades, four of close, seven of hearts."
    assert committed_prefix(text, text) == "Eight of spades, four of close, seven of"


# -- splitting committed words and checking a tail -----------------------------------------


def test_split_committed_forces_the_first_seam_word() -> None:
    assert split_committed("a b c d e", 3) == ("a b", "c")
    assert split_committed("a b c d e", 1) == ("a b c d", "e")
    assert split_committed("a b c", 3) is None  # no context left: nothing to gain
    assert split_committed("  ", 1) is None


def test_a_clean_tail_is_accepted() -> None:
    committed = "Had he married a more amiable woman, he might have been made still"
    context, anchor = "Had he married a more amiable woman, he might have been", "made"
    assert split_committed(committed, 2) == (context, anchor)
    tail = decoded("made still more respectable than he was.")
    assert tail_problem(context, tail, 6.0, committed) is None


def test_a_tail_that_stops_within_the_committed_words_is_short() -> None:
    committed = "He might even have been made amiable"
    context = "He might even have been"
    assert tail_problem(context, decoded("made amiable"), 3.3, committed) == "short"
    assert tail_problem(context, decoded("made amiable himself."), 3.3, committed) is None


def test_a_tail_that_says_committed_words_again_is_a_restart() -> None:
    committed = "And Mr. John Dashwood had then leisure to consider"
    context = "And Mr. John Dashwood had then"
    tail = decoded("leisure to consider how much. Mr. John Dashwood had then leisure")
    assert tail_problem(context, tail, 7.1, committed) == "restart"


@pytest.mark.parametrize(
    "tail",
    [
        decoded("clubs of clubs of clubs of clubs of clubs"),
        decoded("spades, four of close, seven of hearts.", avg_logprob=-1.3),
        decoded("spades, four of close, seven of hearts", hit_cap=True),
    ],
    ids=["loop", "unsure", "capped"],
)
def test_a_degenerate_tail_is_rejected(tail: Decoded) -> None:
    assert tail_problem("Eight of", tail, 3.5, "Eight of spades,") == "degenerate"


# -- the real model --------------------------------------------------------------------------

@pytest.fixture
def engine(whisper_engine: WhisperAsrEngine) -> WhisperAsrEngine:
    return whisper_engine


def tail_outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        str(getattr(r, "tail_outcome", "")) for r in caplog.records if hasattr(r, "tail_outcome")
    ]


@pytest.mark.slow
@needs_testdata
@pytest.mark.parametrize("clip", ["0870", "0920"])
def test_tail_final_equals_the_full_final(
    engine: WhisperAsrEngine, clip: str, caplog: pytest.LogCaptureFixture
) -> None:
    audio = read_clip(LIBRIVOX + clip)
    full = engine.transcribe(audio, final=True).text
    committed = " ".join(full.split()[:-2])
    with caplog.at_level(logging.DEBUG, logger="voicebox.engines.whisper_asr"):
        result = engine.transcribe(audio, final=True, committed=committed)
    assert tail_outcomes(caplog) == ["ok"]  # decoded as a tail, not by the fallback
    assert result.text == full
    assert result.audio_s == pytest.approx(len(audio) / 16_000)


@pytest.mark.slow
@needs_testdata
def test_tail_final_after_real_partials_matches_the_full_final(
    engine: WhisperAsrEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """What the pipeline does: partials every 400 ms, LocalAgreement, then the final."""
    audio = read_clip(LIBRIVOX + "0920")
    partials = [
        engine.transcribe(audio[:end], final=False).text for end in range(6_400, len(audio), 6_400)
    ]
    committed = committed_prefix(partials[-2], partials[-1])
    assert len(committed.split()) >= 5
    with caplog.at_level(logging.DEBUG, logger="voicebox.engines.whisper_asr"):
        tail = engine.transcribe(audio, final=True, committed=committed, draft=partials[-1]).text
    assert tail_outcomes(caplog) == ["ok"]
    assert normalise(tail) == normalise(engine.transcribe(audio, final=True).text)


@pytest.mark.slow
@needs_testdata
def test_committed_words_that_leave_nothing_to_decode_fall_back(
    engine: WhisperAsrEngine, caplog: pytest.LogCaptureFixture
) -> None:
    audio = read_clip(LIBRIVOX + "0930")
    full = engine.transcribe(audio, final=True).text
    with caplog.at_level(logging.DEBUG, logger="voicebox.engines.whisper_asr"):
        result = engine.transcribe(audio, final=True, committed=full)
    assert tail_outcomes(caplog) == ["short"]
    assert result.text == full


@pytest.mark.slow
@needs_testdata
def test_partials_and_silence_ignore_committed_words(engine: WhisperAsrEngine) -> None:
    audio = read_clip("cards/005")
    committed = "Eight of spades, four of"
    assert engine.transcribe(audio, final=False, committed=committed) == engine.transcribe(
        audio, final=False
    )
    silence = np.zeros(32_000, dtype=np.float32)
    assert engine.transcribe(silence, final=True, committed=committed).text == ""


def test_tail_token_limit_follows_the_draft() -> None:
    from voicebox.engines.asr_checks import TAIL_SLACK_TOKENS, tail_token_limit

    def encode(text: str) -> list[int]:
        return list(range(len(text.split())))  # one token per word

    draft = "had he married a more amiable woman he might"
    # The context covers the first 4 words; 5 are left, plus the slack.
    assert tail_token_limit(encode, "had he married a", draft) == 5 + TAIL_SLACK_TOKENS
    assert tail_token_limit(encode, "had he married a", "") is None
    assert tail_token_limit(encode, draft, draft) is None


def test_a_restart_after_a_two_word_context_is_caught() -> None:
    tail = Decoded(text="spades, four of close, seven of hearts. Eight of sp", avg_logprob=-0.3,
                    no_speech_prob=0.01, hit_cap=False, resume_s=None)
    assert tail_problem("Eight of", tail, 3.5, "Eight of spades, four") == "restart"
    one = Decoded(text="of spades, four of clubs.", avg_logprob=-0.3, no_speech_prob=0.01,
                   hit_cap=False, resume_s=None)
    assert tail_problem("Eight", one, 3.5, "Eight of spades, four") == "short"


def test_a_restart_cut_short_by_the_limit_is_caught() -> None:
    tail = Decoded(text="spades, four of close, seven of hearts. Eight", avg_logprob=-0.3,
                    no_speech_prob=0.01, hit_cap=False, resume_s=None)
    assert tail_problem("Eight of", tail, 3.5, "Eight of spades, four") == "restart"
    fine = Decoded(text="spades. Four of clubs.", avg_logprob=-0.3, no_speech_prob=0.01,
                    hit_cap=False, resume_s=None)
    assert tail_problem("Eight of", fine, 3.5, "Eight of spades, four") is None
