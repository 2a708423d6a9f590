"""A clause's speech a piece at a time: Piper's voice cut before its decoder, the pieces
fitted and resampled as they come, and the reply playing the first before the rest."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
import soxr

from tests.fakes import (
    ChunkedToneTts,
    EnergyVad,
    ScriptedLlm,
    ToneTts,
    fake_engines,
    silence,
    speechlike,
)
from voicebox.audio.resample import StreamResampler
from voicebox.config import Config
from voicebox.events import EventLog, Interrupted, PlaybackStarted, TtsFirstAudio
from voicebox.runtime.clause_audio import COMMA_PAUSE_MS, ClauseAudio, fit_clause_audio
from voicebox.runtime.session import SimulationResult, simulate

RATE = 16_000


def _clause_like(rate: int, seed: int) -> np.ndarray:
    """A lead-in, two 'words' with a quiet gap, a fading end and a sentence pause."""
    rng = np.random.default_rng(seed)

    def word(s: float) -> np.ndarray:
        return (0.3 * rng.standard_normal(int(s * rate))).astype(np.float32)

    def quiet(s: float) -> np.ndarray:
        return (1e-4 * rng.standard_normal(int(s * rate))).astype(np.float32)

    fade = word(0.05) * np.linspace(1, 0, int(0.05 * rate), dtype=np.float32)
    return np.concatenate([quiet(0.137), word(0.31), quiet(0.09), word(0.2), fade, quiet(0.21)])


def _in_pieces(fitter: ClauseAudio, audio: np.ndarray, cuts: list[int]) -> np.ndarray:
    out = [fitter.feed(audio[a:b]) for a, b in zip([0, *cuts], [*cuts, audio.shape[0]],
                                                   strict=True)]
    return np.concatenate([*out, fitter.finish()])


@pytest.mark.parametrize("clause, previous", [
    ("I'm sorry", None),              # first clause: lead-in dropped, tail nearly gone
    ("for any confusion.", "I'm sorry"),  # goes on inside a phrase, ends a sentence
    ("Then, after that,", "Sure."),   # after a sentence: lead-in kept, a comma's pause
])
def test_clause_audio_in_pieces_is_the_whole_clause_fitted(clause: str, previous: str | None
                                                           ) -> None:
    rng = np.random.default_rng(1)
    for seed in range(6):
        audio = _clause_like(RATE, seed)
        whole = fit_clause_audio(audio, RATE, clause, previous)
        cuts = sorted(rng.choice(np.arange(1, audio.shape[0]), size=seed + 1, replace=False))
        pieces = _in_pieces(ClauseAudio(clause, previous, RATE, RATE), audio, list(cuts))
        assert np.array_equal(pieces, whole)


def test_clause_audio_plays_each_word_as_it_comes_and_holds_back_only_quiet() -> None:
    audio = _clause_like(RATE, 0)
    fitter = ClauseAudio("Then, after that,", "Sure.", RATE, RATE)
    first = fitter.feed(audio[: int(0.3 * RATE)])  # lead-in and most of the first word
    assert first.shape[0] > int(0.25 * RATE)  # out at once (this lead-in is kept)
    assert fitter.feed(audio[int(0.3 * RATE) : int(0.5 * RATE)]).shape[0] > 0
    rest = fitter.feed(audio[int(0.5 * RATE) :])
    tail = fitter.finish()  # the comma's pause, held back until the clause ended
    assert rest.shape[0] > 0 and abs(tail.shape[0] - RATE * COMMA_PAUSE_MS // 1000) <= RATE // 400


def test_clause_audio_resampled_in_pieces_matches_the_whole_clause_resampled() -> None:
    rate_in, rate_out = 22_050, 16_000
    # Speech-like: nothing near the band edge, where the two resamplers' filters differ.
    audio = soxr.resample(soxr.resample(_clause_like(rate_in, 3), rate_in, 8_000), 8_000,
                          rate_in).astype(np.float32)
    whole = fit_clause_audio(soxr.resample(audio, rate_in, rate_out, quality="HQ")
                             .astype(np.float32), rate_out, "for any confusion.", "I'm sorry")
    cuts = [3072 * k for k in range(1, audio.shape[0] // 3072 + 1)]
    pieces = _in_pieces(ClauseAudio("for any confusion.", "I'm sorry", rate_in, rate_out),
                        audio, cuts)
    assert pieces.shape == whole.shape
    assert float(np.abs(pieces - whole).max()) < 1e-3


def test_stream_resampler_flush_gives_the_whole_buffers_length() -> None:
    rate_in, rate_out = 22_050, 48_000
    audio = (0.5 * np.sin(np.arange(9_999) / 7) * np.hanning(9_999)).astype(np.float32)
    stream = StreamResampler(rate_in, rate_out)
    out = np.concatenate([stream.process(audio[i : i + 1000]) for i in range(0, 9_999, 1000)]
                         + [stream.flush()])
    whole = soxr.resample(audio, rate_in, rate_out, quality="HQ")
    assert out.shape[0] == round(9_999 * rate_out / rate_in) == whole.shape[0]
    assert float(np.abs(out - whole).max()) < 1e-4
    same = StreamResampler(RATE, RATE)
    assert same.process(audio).shape == audio.shape and same.flush().shape == (0,)


def _simulate(tts: ToneTts, audio: np.ndarray | None = None,
              llm: ScriptedLlm | None = None) -> SimulationResult:
    eng = fake_engines(tts=tts, llm=llm)
    if audio is None:
        audio = np.concatenate([silence(0.5), speechlike(1.0), silence(3.0)])

    async def go() -> SimulationResult:
        return await asyncio.wait_for(
            simulate(audio, RATE, config=Config(), vad=EnergyVad(), engines=eng,
                     log=EventLog(), speed=4.0), timeout=60)

    try:
        return asyncio.run(go())
    finally:
        for w in (eng.vad_worker, eng.asr_worker, eng.llm_worker, eng.tts_worker):
            w.close()


def test_a_reply_starts_playing_before_its_first_clause_is_synthesized() -> None:
    tts = ChunkedToneTts(piece_s=0.1, delay_s=0.4)  # each later piece 0.4 s behind
    result = _simulate(tts)
    first = next(e for e in result.events if isinstance(e, TtsFirstAudio))
    started = next(e for e in result.events if isinstance(e, PlaybackStarted))
    assert first.compute_ms < 300  # the first piece, not the whole clause (>= 0.4 s)
    assert started.t < tts.produced[1][1]  # playing before the second piece existed
    # Every piece reached the speaker: the output holds the whole reply's tone.
    whole = sum(ToneTts().synthesize(t).shape[0] for t in tts.spoken)
    loud = int(np.count_nonzero(np.abs(result.output) > 0.01))
    assert loud >= 0.95 * whole


def test_a_barge_in_stops_the_decoder_after_the_piece_it_is_on() -> None:
    llm = ScriptedLlm("One two three four five six seven eight nine.")
    # The first clause ("One two three") is 30 pieces, 50 ms apart: 1.5 s of decoding.
    tts = ChunkedToneTts(piece_s=0.1, delay_s=0.05, seconds_per_word=1.0)
    audio = np.concatenate([silence(0.3), speechlike(0.8), silence(1.6), speechlike(0.8),
                            silence(3.0)])
    result = _simulate(tts, audio, llm)
    inter = next(e for e in result.events if isinstance(e, Interrupted))
    assert inter.heard_text and inter.heard_text.startswith("One")
    first = [t for call, t in tts.produced if call == 0]
    assert first[0] < inter.t  # it was playing when the user barged in...
    assert len(first) < 30  # ...and was still being decoded:
    assert max(first) < inter.t + 0.2  # it stopped after the piece it was on


def test_a_tts_without_pieces_still_speaks_whole_clauses() -> None:
    result = _simulate(ToneTts())
    first = next(e for e in result.events if isinstance(e, TtsFirstAudio))
    assert first.compute_ms < 1000 and result.output.shape[0] > 0
    assert any(isinstance(e, PlaybackStarted) for e in result.events)


# The real voice.

def _piper(**kwargs: object):  # type: ignore[no-untyped-def]
    from voicebox.engines.piper_tts import PiperTtsEngine
    from voicebox.models.locate import packaged_path

    return PiperTtsEngine(packaged_path("tts"), noise_scale=0.0, noise_w_scale=0.0,
                          **kwargs)  # type: ignore[arg-type]


def test_real_piper_pieces_are_the_whole_clause() -> None:
    from voicebox.engines.piper_tts import LATER_CHUNK_FRAMES

    tts = _piper(chunk_frames=12)
    assert tts.chunked
    text = "That is a good question, and the answer is yes. Ask me another."
    whole = tts.synthesize(text)
    pieces = list(tts.synthesize_chunks(text))
    joined = np.concatenate(pieces)
    assert joined.shape == whole.shape
    # Each piece is decoded with 8 frames of context either side: the same samples
    # within -45 dB of full scale (the whole clause peaks near 1.0).
    assert float(np.abs(joined - whole).max()) < 6e-3
    assert pieces[0].shape[0] == 12 * 256  # the first piece: 12 frames of 256 samples
    assert max(p.shape[0] for p in pieces) <= LATER_CHUNK_FRAMES * 3 // 2 * 256
    assert len(pieces) > 4  # two sentences, each in several pieces
    assert 0.5 < float(np.abs(whole).max()) <= 1.0  # one gain for the voice, limited


def test_real_piper_whole_clauses_when_told_and_the_same_audio() -> None:
    whole = _piper(chunk_frames=0)
    assert not whole.chunked
    pieces = list(whole.synthesize_chunks("Turn on the fan."))
    assert len(pieces) == 1
    chunked = _piper(chunk_frames=12)
    a, b = whole.synthesize("Turn on the fan."), chunked.synthesize("Turn on the fan.")
    assert np.array_equal(a, b) and np.array_equal(pieces[0], a)


def test_real_piper_halves_that_do_not_load_are_cut_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voicebox.engines.piper_split import split_paths
    from voicebox.models.locate import packaged_path

    monkeypatch.setenv("VOICEBOX_CACHE_DIR", str(tmp_path))
    assert _piper().chunked
    halves = split_paths(packaged_path("tts"))
    assert halves.encoder.is_relative_to(tmp_path) and halves.decoder.is_file()
    halves.encoder.write_bytes(b"not an onnx graph")
    again = _piper()
    assert again.chunked and halves.encoder.stat().st_size > 1000
    assert again.synthesize("Hello.").shape[0] > 0


def test_a_graph_that_is_not_a_piper_voice_is_not_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from voicebox.engines.piper_split import cached_split, main
    from voicebox.models.locate import packaged_path

    vad = packaged_path("vad")
    enc, dec = tmp_path / "e.onnx", tmp_path / "d.onnx"
    assert main([str(vad), str(enc), str(dec)]) == 1
    assert not enc.exists() and not dec.exists() and not list(tmp_path.iterdir())
    assert main([]) == 2
    monkeypatch.setenv("VOICEBOX_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert cached_split(vad) is None
    assert "not a Piper VITS voice" in caplog.text


def test_soft_limit_keeps_levels_below_the_knee_and_never_clips() -> None:
    from voicebox.engines.piper_tts import LIMIT_KNEE, soft_limit

    x = np.linspace(-3, 3, 6001, dtype=np.float32)
    y = soft_limit(x)
    low = np.abs(x) <= LIMIT_KNEE
    assert np.array_equal(y[low], x[low])
    assert float(np.abs(y).max()) <= 1.0 and np.all(np.diff(y) >= 0)
    assert 0.95 < float(soft_limit(np.array([1.2], dtype=np.float32))[0]) < 1.0  # eased
