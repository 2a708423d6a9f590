"""The turn's audio as the ASR gets it: pre-roll, long pauses cut short, continuation."""

from __future__ import annotations

import numpy as np

from voicebox.runtime.turn_audio import KEEP_SILENT_FRAMES, TurnAudio

FRAME_S = 0.032
SPEECH, QUIET = 0.9, 0.01


def _frame(value: float) -> np.ndarray:
    return np.full(512, value, dtype=np.float32)


def _audio(pre_roll_ms: int = 300, min_speech_ms: int = 64) -> TurnAudio:
    return TurnAudio(frame_s=FRAME_S, pre_roll_ms=pre_roll_ms, min_speech_ms=min_speech_ms,
                     end_threshold=0.35)


def test_the_pre_roll_reaches_back_before_the_frames_that_started_the_turn() -> None:
    audio = _audio(pre_roll_ms=300, min_speech_ms=64)
    for i in range(20):
        audio.add(_frame(i), QUIET, in_turn=False)
    audio.add(_frame(100), SPEECH, in_turn=False)  # the two frames that made the VAD
    audio.add(_frame(101), SPEECH, in_turn=False)  # call speech (64 ms)
    audio.start()
    values = [float(f[0]) for f in audio.frames]
    assert values[-2:] == [100, 101]
    assert len(values) - 2 == int(300 / (FRAME_S * 1000))  # 9 frames (288 ms) before them
    assert values[0] == 11


def test_without_pre_roll_the_starting_frames_are_still_kept() -> None:
    audio = _audio(pre_roll_ms=0, min_speech_ms=64)
    audio.add(_frame(1), SPEECH, in_turn=False)
    audio.add(_frame(2), SPEECH, in_turn=False)
    audio.start()
    assert [float(f[0]) for f in audio.frames] == [1, 2]


def test_a_long_pause_is_cut_short_and_the_count_restarts_with_the_next_turn() -> None:
    audio = _audio()
    audio.start()
    audio.add(_frame(1), SPEECH, in_turn=True)
    for _ in range(30):
        audio.add(_frame(0), QUIET, in_turn=True)
    audio.add(_frame(2), SPEECH, in_turn=True)
    assert len(audio.frames) == 1 + KEEP_SILENT_FRAMES + 1
    audio.end()
    assert audio.frames == []
    audio.start()  # a new turn: its first quiet frames are kept, not counted on
    before = len(audio.frames)
    audio.add(_frame(0), QUIET, in_turn=True)  # a stop consonant's closure
    assert len(audio.frames) == before + 1


def test_a_continued_turn_keeps_its_words_and_a_short_gap() -> None:
    audio = _audio()
    audio.start()
    audio.add(_frame(1), SPEECH, in_turn=True)
    words = list(audio.frames)
    audio.end()
    for _ in range(20):
        audio.add(_frame(0), QUIET, in_turn=False)
    assert audio.gap_ms == 20 * FRAME_S * 1000
    audio.resume()
    assert audio.frames[: len(words)] == words
    assert len(audio.frames) == len(words) + KEEP_SILENT_FRAMES
    assert audio.gap_ms == 0
    assert audio.samples().shape == (512 * len(audio.frames),)
