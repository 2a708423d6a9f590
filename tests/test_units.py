"""Unit tests of the small runtime parts: turn detector, clauses, memory, buffers, config."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from voicebox.audio.ring import InputRing, PlaybackBuffer
from voicebox.config import ConfigError, TurnConfig, load_config
from voicebox.engines.llama_llm import SCORING_SYSTEM_PROMPT, scoring_messages
from voicebox.engines.protocols import ChatMessage
from voicebox.runtime.clauses import ClauseSplitter
from voicebox.runtime.memory import Conversation
from voicebox.runtime.turns import Decision, TurnDetector, end_of_turn_score, required_silence_ms

FRAME_S = 0.032


def _feed(det: TurnDetector, probs: list[float], t0: int = 0) -> list[tuple[int, Decision]]:
    out = []
    for i, p in enumerate(probs):
        d = det.update(p, (t0 + i + 1) * FRAME_S)
        if d is not None:
            out.append((t0 + i, d))
    return out


def test_turn_start_pause_resume_end() -> None:
    cfg = TurnConfig(min_speech_ms=64, speculate_after_ms=96, end_of_turn_ms=480)
    det = TurnDetector(cfg, FRAME_S)
    probs = [0.1] * 3 + [0.9] * 10 + [0.1] * 4 + [0.9] * 5 + [0.1] * 20
    got = [d for _, d in _feed(det, probs)]
    assert got == [Decision.START, Decision.PAUSE, Decision.RESUME, Decision.PAUSE, Decision.END]
    assert det.turn.speech_end_s == pytest.approx((3 + 10 + 4 + 5) * FRAME_S)
    assert not det.in_turn


def test_short_blip_is_not_speech() -> None:
    det = TurnDetector(TurnConfig(min_speech_ms=96), FRAME_S)
    assert _feed(det, [0.9, 0.9, 0.1, 0.9, 0.1] * 3) == []


def test_hysteresis_keeps_speech_between_thresholds() -> None:
    det = TurnDetector(TurnConfig(start_threshold=0.5, end_threshold=0.3), FRAME_S)
    got = [d for _, d in _feed(det, [0.9] * 5 + [0.4] * 30)]
    assert got == [Decision.START]


def _feed_levels(det: TurnDetector, frames: list[tuple[float, float]]) -> None:
    """Feed (probability, level) frames, going on from the stream time ``det`` has seen."""
    t0 = round(max(det.turn.speech_end_s + det.turn.silence_s, det.turn.sound_s) / FRAME_S)
    for i, (p, level) in enumerate(frames):
        det.update(p, (t0 + i + 1) * FRAME_S, level)


ROOM, VOICE, TAIL = 0.001, 0.1, 0.02
"""Frame levels: the room's noise floor, speech, a soft word onset or tail."""


def test_energy_hold_restarts_the_silence_at_a_soft_onset() -> None:
    """The VAD has not called the next word speech yet, but the microphone is loud again
    after having fallen to the floor: the pause so far no longer counts."""
    det = TurnDetector(TurnConfig(min_speech_ms=64), FRAME_S)
    _feed_levels(det, [(0.1, ROOM)] * 30 + [(0.9, VOICE)] * 10 + [(0.1, ROOM)] * 10)
    assert det.silence_ms == pytest.approx(10 * FRAME_S * 1000)
    _feed_levels(det, [(0.2, TAIL)])
    assert det.silence_ms == 0.0
    _feed_levels(det, [(0.1, ROOM)] * 3)
    assert det.silence_ms == pytest.approx(3 * FRAME_S * 1000)
    assert det.turn.speech_end_s == pytest.approx(40 * FRAME_S)  # the VAD's end, kept


def test_energy_hold_ignores_the_words_own_tail() -> None:
    """Quiet speech right after the VAD's end (a soft final consonant) is not the user
    going on: the level has not yet fallen to the floor."""
    det = TurnDetector(TurnConfig(min_speech_ms=64), FRAME_S)
    _feed_levels(det, [(0.1, ROOM)] * 30 + [(0.9, VOICE)] * 10 + [(0.1, TAIL)] * 4)
    assert det.silence_ms == pytest.approx(4 * FRAME_S * 1000)


def test_energy_hold_off_or_without_levels_counts_vad_silence() -> None:
    frames = [(0.1, ROOM)] * 30 + [(0.9, VOICE)] * 10 + [(0.1, ROOM)] * 5 + [(0.2, TAIL)]
    det = TurnDetector(TurnConfig(min_speech_ms=64, energy_hold=False), FRAME_S)
    _feed_levels(det, frames)
    assert det.silence_ms == pytest.approx(6 * FRAME_S * 1000)
    det = TurnDetector(TurnConfig(min_speech_ms=64), FRAME_S)
    _feed(det, [p for p, _ in frames])
    assert det.silence_ms == pytest.approx(6 * FRAME_S * 1000)


def test_energy_hold_keeps_a_turn_open_at_most_the_longest_wait() -> None:
    """Sounds the VAD calls silence (a keyboard, a clock) hold the count only until
    ``end_of_turn_ms`` after the VAD's end of speech; then the silence ends the turn."""
    cfg = TurnConfig(min_speech_ms=64, end_of_turn_ms=320, speculate_after_ms=32)
    det = TurnDetector(cfg, FRAME_S)
    _feed_levels(det, [(0.1, ROOM)] * 30 + [(0.9, VOICE)] * 10)
    clicks = ([(0.1, ROOM)] * 3 + [(0.1, TAIL)]) * 10
    _feed_levels(det, clicks)
    assert not det.in_turn
    assert det.turn.sound_s - det.turn.speech_end_s < cfg.end_of_turn_ms / 1000


def test_energy_hold_floor_follows_the_room() -> None:
    """Under a steady noise the floor is the noise: its own level holds nothing."""
    noise = 0.02
    det = TurnDetector(TurnConfig(min_speech_ms=64), FRAME_S)
    _feed_levels(det, [(0.1, noise)] * 60 + [(0.9, VOICE)] * 10 + [(0.1, noise)] * 20)
    assert det.silence_ms == pytest.approx(20 * FRAME_S * 1000)


def test_end_now_confirms_only_during_silence() -> None:
    det = TurnDetector(TurnConfig(), FRAME_S)
    _feed(det, [0.9] * 5)
    assert not det.end_now()
    _feed(det, [0.1] * 2, t0=5)
    assert det.end_now()
    assert not det.in_turn


def test_clauses_sentence_and_first_comma() -> None:
    sp = ClauseSplitter(first_min_words=2, min_words=6, first_max_words=0)
    out: list[str] = []
    for piece in ["Sure", ",", " the", " lights", " are", " on", ". Anything", " else", "?"]:
        out += sp.feed(piece)
    out += sp.flush()
    assert out == ["Sure, the lights are on.", "Anything else?"]
    sp = ClauseSplitter(first_min_words=2, first_max_words=0)
    assert sp.feed("Well, yes, I can do that, of course. ") == [
        "Well, yes,",
        "I can do that, of course.",
    ]


def test_clauses_drop_markup() -> None:
    sp = ClauseSplitter()
    assert sp.feed("**Bold** move 😀. ") == ["Bold move ."]
    assert sp.flush() == []


def _count_words(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content.split()) for m in messages)


def test_conversation_trims_oldest_and_keeps_system() -> None:
    conv = Conversation("be brief", _count_words, context_tokens=30, reply_tokens=10)
    for i in range(5):
        conv.add(f"question {i} " + "word " * 3, f"answer {i}")
    msgs = conv.prompt("new question")
    assert msgs[0] == ChatMessage("system", "be brief")
    assert msgs[-1] == ChatMessage("user", "new question")
    assert _count_words(msgs) <= 20
    assert msgs[1].role == "user"
    assert "answer 4" in [m.content for m in msgs]


def test_scoring_messages_quote_only_user_words() -> None:
    # The end-of-turn score sees the user's words quoted under its own system prompt; the
    # reply sees them bare under the configured one.
    messages = [ChatMessage("system", "be a pirate"), ChatMessage("user", "hi there."),
                ChatMessage("assistant", "Hello."), ChatMessage("user", "?")]
    assert scoring_messages(messages) == [
        ChatMessage("system", SCORING_SYSTEM_PROMPT), ChatMessage("user", 'I said: "hi there."'),
        ChatMessage("assistant", "Hello."), ChatMessage("user", "?")]


def test_conversation_keeps_an_exchange_added_while_a_prompt_is_built() -> None:
    # The prompt is built on the LLM's thread; an exchange recorded meanwhile on the
    # event loop (here: from inside the token count) must neither be trimmed by that
    # prompt nor be lost.
    conv: Conversation
    late = {"done": False}

    def count(ms: Sequence[ChatMessage]) -> int:
        if not late["done"]:
            late["done"] = True
            conv.add("late question", "late answer")
        return sum(len(m.content.split()) for m in ms)

    conv = Conversation("sys", count, context_tokens=14, reply_tokens=4)
    for i in range(3):
        conv.add(f"q{i} a b", f"r{i}")
    msgs = conv.prompt("new")
    late_q = ChatMessage("user", "late question")
    assert late_q not in msgs
    assert conv.history[-2:] == [late_q, ChatMessage("assistant", "late answer")]
    assert conv.history[0] != ChatMessage("user", "q0 a b")  # the trim applied to the live history


def test_conversation_cuts_an_overlong_utterance() -> None:
    conv = Conversation("sys", _count_words, context_tokens=20, reply_tokens=5)
    msgs = conv.prompt(" ".join(f"w{i}" for i in range(100)))
    assert _count_words(msgs) <= 15
    assert msgs[-1].content.endswith("w99")


def test_input_ring_wraps_and_counts_overruns() -> None:
    ring = InputRing(10)
    ring.write(np.arange(6, dtype=np.float32))
    pos, got = ring.read_new()
    assert pos == 0 and got.tolist() == list(range(6))
    ring.write(np.arange(6, 20, dtype=np.float32))
    pos, got = ring.read_new()
    assert ring.overruns == 4 and pos == 10 and got.tolist() == list(range(10, 20))


def test_playback_buffer_positions_and_clear() -> None:
    pb = PlaybackBuffer()
    pb.push(np.ones(15, np.float32), turn=3)
    out = np.full(10, 9.0, np.float32)
    pb.fill(out, stream_pos=100)
    assert out.tolist() == [1.0] * 10 and pb.first_sample_pos == 100 and pb.played == 10
    pb.fill(out, stream_pos=110)
    assert out.tolist() == [1.0] * 5 + [0.0] * 5 and pb.idle and pb.played == 15
    pb.push(np.ones(50, np.float32), turn=4)
    pb.clear()
    pb.fill(out, stream_pos=120)
    assert out.tolist() == [0.0] * 10 and pb.idle


def test_a_turn_replied_to_again_after_a_clear_starts_its_count_anew() -> None:
    """A false start: the reply to turn 3 began, the user went on, the reply was cleared
    and turn 3 answered again. Its first sample and count are the new reply's (they were
    the old one's, so PlaybackStarted gave a negative latency and ReplyDone came early)."""
    pb = PlaybackBuffer()
    out = np.zeros(10, np.float32)
    pb.push(np.ones(30, np.float32), turn=3)
    pb.fill(out, stream_pos=100)
    pb.clear()
    pb.fill(out, stream_pos=110)
    pb.push(np.ones(20, np.float32), turn=3)
    pb.fill(out, stream_pos=500)
    assert pb.playing_turn == 3 and pb.first_sample_pos == 500 and pb.played == 10


def test_config_validation_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="speculate_after_ms"):
        TurnConfig(speculate_after_ms=900, end_of_turn_ms=500)
    with pytest.raises(ConfigError, match="hold_min_dbfs"):
        TurnConfig(hold_min_dbfs=6)
    bad = tmp_path / "c.toml"
    bad.write_text("[turn]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(bad)
    good = tmp_path / "g.toml"
    good.write_text("[turn]\nend_of_turn_ms = 700\n[llm]\nmax_reply_tokens = 20\n")
    cfg = load_config(good, llm__max_reply_tokens=30)
    assert cfg.turn.end_of_turn_ms == 700 and cfg.llm.max_reply_tokens == 30


@pytest.mark.parametrize(("toml", "fragment"), [
    ('[llm]\nsystem_prompt = 5\n', "[llm] system_prompt must be a string, not 5"),
    ('[turn]\nend_of_turn_ms = "x"\n', "[turn] end_of_turn_ms must be a whole number"),
    ("[turn]\nend_of_turn_ms = 900.5\n", "must be a whole number, not 900.5"),
    ("[turn]\nsilence_curve = [[0.5]]\n", "silence_curve must be a list of [score, ms] pairs"),
    ('[audio]\necho_cancel = "yes"\n', "echo_cancel must be true or false"),
    ("[audio]\ninput_device = [3]\n", "input_device must be a whole number or a string"),
    ("[audio]\nsample_rate_hz = 1\n", "sample_rate_hz must be within 8000..384000"),
    ("[models]\nllm = 5\n", "[models] llm must be a path"),
    ("[intents]\nfile = 5\n", "[intents] file must be a path"),
    ('asr_threads = "two"\n', "asr_threads must be a whole number"),
    ("turn = 5\n", "[turn] must be a table"),
])
def test_config_values_of_the_wrong_type_are_named(
    tmp_path: Path, toml: str, fragment: str
) -> None:
    """Caught when the file is read, not as a crash (TypeError) once a model loads."""
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert fragment in str(info.value)


def test_config_values_of_the_right_type_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[turn]\nllm_eot_full = 1\n[audio]\ninput_device = 3\n'
                    '[models]\nllm = "m.gguf"\n')
    cfg = load_config(path)
    assert cfg.turn.llm_eot_full == 1.0 and isinstance(cfg.turn.llm_eot_full, float)
    assert cfg.audio.input_device == 3 and cfg.models.llm == Path("m.gguf")


def test_energy_gate_ignores_steady_noise_and_catches_an_onset() -> None:
    from voicebox.runtime.bargein import EnergyGate

    rng = np.random.default_rng(3)
    gate = EnergyGate(rise_db=12, min_dbfs=-45, blocks=2)
    noise = [(0.01 * rng.standard_normal(160)).astype(np.float32) for _ in range(100)]
    assert not any(gate.loud(b, track_floor=True) for b in noise)
    speech = [(0.2 * rng.standard_normal(160)).astype(np.float32) for _ in range(3)]
    assert [gate.loud(b, track_floor=False) for b in speech] == [False, True, True]
    # A level the VAD did not confirm becomes background.
    gate.false_alarm(gate.level(speech[0]))
    assert not gate.loud(speech[1] * 0.9, track_floor=False)


def test_energy_gate_learns_a_noise_that_starts_loud() -> None:
    """Digital silence (a stream that opens on it), then steady noise: the noise is the
    floor within a few blocks, and only a real onset over it is loud."""
    from voicebox.runtime.bargein import EnergyGate

    rng = np.random.default_rng(5)
    gate = EnergyGate(rise_db=12, min_dbfs=-45, blocks=2)
    for _ in range(20):
        gate.loud(np.zeros(160, np.float32), track_floor=True)
    onset = np.zeros(160, np.float32)
    onset[-4:] = 0.02 * rng.standard_normal(4)  # the block where the noise comes in
    gate.loud(onset, track_floor=True)
    noise = [(0.02 * rng.standard_normal(160)).astype(np.float32) for _ in range(50)]
    heard = [gate.loud(b, track_floor=True) for b in noise]
    assert not any(heard[10:])  # neither the dead blocks nor the onset block set the floor
    louder = [(0.1 * rng.standard_normal(160)).astype(np.float32) for _ in range(150)]
    heard = [gate.loud(b, track_floor=True) for b in louder]  # a fan switched on
    assert heard[5] and not any(heard[105:])  # the floor rises within ~1 s
    later = [(0.1 * rng.standard_normal(160)).astype(np.float32) for _ in range(20)]
    assert not any(gate.loud(b, track_floor=False) for b in later)  # a reply plays
    speech = [(0.5 * rng.standard_normal(160)).astype(np.float32) for _ in range(2)]
    assert [gate.loud(b, track_floor=False) for b in speech] == [False, True]


def test_energy_gate_is_not_reset_by_an_empty_block() -> None:
    from voicebox.runtime.bargein import EnergyGate

    gate = EnergyGate(rise_db=12, min_dbfs=-45, blocks=2)
    assert not gate.loud(np.zeros(160, np.float32), track_floor=True)
    loud = (0.2 * np.random.default_rng(4).standard_normal(480)).astype(np.float32)
    empty = np.zeros(0, np.float32)
    assert [gate.loud(b, track_floor=False) for b in (loud, empty, loud)] == [False, False, True]


@pytest.mark.parametrize("rate", [48000, 44100])
def test_stream_resampler_gives_every_block_its_share_at_once(rate: int) -> None:
    from voicebox.audio.resample import StreamResampler

    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    stream = StreamResampler(rate, 16000)
    block = rate // 100
    sizes, out = [], []
    for i in range(0, rate, block):
        piece = stream.process(tone[i : i + block])
        sizes.append(piece.size)
        out.append(piece)
    # After the first block (the filter's few ms of delay), 10 ms in, 10 ms out, each time.
    assert all(159 <= n <= 161 for n in sizes[1:])
    assert 16000 - 80 <= sum(sizes) <= 16000
    steady = np.concatenate(out)[1600:]
    assert abs(float(np.sqrt((steady**2).mean())) - 0.5 / np.sqrt(2)) < 0.01


def test_clauses_cap_run_on_sentences() -> None:
    sp = ClauseSplitter(first_max_words=3, max_words=5)
    out = sp.feed("Well I think " + " ".join(f"w{i}" for i in range(12)) + " ")
    assert out[0] == "Well I think"
    assert all(len(c.split()) <= 5 for c in out)


def test_first_clause_is_cut_as_soon_as_its_words_are_whole() -> None:
    sp = ClauseSplitter(first_min_words=2, first_max_words=3)
    assert sp.feed("In the context") == []  # "context" may still grow ("contexts")
    assert sp.feed(" of") == ["In the context"]
    sp = ClauseSplitter(first_min_words=2, first_max_words=3)
    assert sp.feed("It is to be") == ["It is"]  # not "It is to": cut before a phrase


def test_clauses_do_not_end_at_abbreviations() -> None:
    sp = ClauseSplitter()
    assert sp.feed("And Mr. Dashwood went home. Then ") == ["And Mr. Dashwood went home."]


def test_required_silence_follows_the_curve_between_its_points() -> None:
    cfg = TurnConfig(end_of_turn_ms=700, silence_curve=((0.4, 600), (0.6, 400), (0.8, 200)))
    assert required_silence_ms(cfg, None) == 700  # no signal: the full silence
    assert required_silence_ms(cfg, 0.39) == 700  # below the curve
    assert required_silence_ms(cfg, 0.4) == 600
    assert required_silence_ms(cfg, 0.5) == 500  # linear between points
    assert required_silence_ms(cfg, 0.7) == 300
    assert required_silence_ms(cfg, 0.95) == 200  # above the last point
    # Never more than the plain silence endpoint, whatever the curve says.
    short = TurnConfig(end_of_turn_ms=500, silence_curve=((0.4, 600), (0.8, 200)))
    assert required_silence_ms(short, 0.4) == 500
    # Close scores give close silences (no step that flips a turn by hundreds of ms).
    assert abs(required_silence_ms(cfg, 0.601) - required_silence_ms(cfg, 0.599)) <= 2


def test_end_of_turn_score_scales_the_llm_and_averages() -> None:
    cfg = TurnConfig(llm_eot_full=0.5, audio_model=True)
    assert end_of_turn_score(cfg, None, None) is None
    assert end_of_turn_score(cfg, 0.25, None) == pytest.approx(0.5)
    assert end_of_turn_score(cfg, 0.9, 0.2) == pytest.approx(0.6)
    llm_only = TurnConfig(llm_eot_full=0.5, audio_model=False)
    assert end_of_turn_score(llm_only, 0.25, 0.9) == pytest.approx(0.5)
    assert end_of_turn_score(llm_only, None, 0.9) is None


@pytest.mark.parametrize("curve", [(), ((0.6, 300), (0.5, 400)), ((0.5, 300), (0.6, 400)),
                                   ((0.5, 0),), ((1.5, 200),)])
def test_silence_curve_is_validated(curve: tuple[tuple[float, int], ...]) -> None:
    with pytest.raises(ConfigError, match="silence_curve"):
        TurnConfig(silence_curve=curve)


def test_silence_curve_reads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[turn]\nsilence_curve = [[0.5, 450], [0.8, 200]]\n")
    assert load_config(path).turn.silence_curve == ((0.5, 450), (0.8, 200))


def test_worker_stream_waits_while_go_is_clear() -> None:
    import asyncio
    import threading

    from voicebox.runtime.workers import EngineWorker

    produced: list[int] = []

    def numbers() -> Iterator[str]:
        for i in range(5):
            produced.append(i)
            yield str(i)

    async def main() -> list[str]:
        worker, cancel, go = EngineWorker("t"), threading.Event(), threading.Event()
        go.clear()
        got: list[str] = []
        async for item in worker.stream(numbers, cancel, go):
            got.append(item)
            if item == "0":
                await asyncio.sleep(0.05)
                assert produced == [0]  # held after the first item while go is clear
                go.set()
        worker.close()
        return got

    assert asyncio.run(main()) == ["0", "1", "2", "3", "4"]


def test_tts_threads_follow_the_cores_unless_set() -> None:
    import os

    from voicebox.config import Config
    from voicebox.runtime.build import tts_threads

    for cores, threads in ((1, 1), (2, 2), (8, 2)):
        with mock.patch.object(os, "sched_getaffinity", return_value=set(range(cores))):
            assert tts_threads(Config()) == threads
    assert tts_threads(Config(tts_threads=3)) == 3
    with pytest.raises(ConfigError, match="tts_threads"):
        Config(tts_threads=0)


def test_trim_trailing_silence_keeps_a_short_break() -> None:
    from voicebox.runtime.clause_audio import trim_trailing_silence

    rate = 16_000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate // 2) / rate)
    audio = np.concatenate([tone, np.zeros(rate // 5)]).astype(np.float32)  # 500 + 200 ms
    out = trim_trailing_silence(audio, rate, keep_ms=40)
    assert rate // 2 <= out.shape[0] <= rate // 2 + rate * 45 // 1000
    assert np.array_equal(out, audio[: out.shape[0]])
    quiet = np.zeros(rate, np.float32)
    assert trim_trailing_silence(quiet, rate).shape[0] == rate  # nothing loud: untouched


def test_clause_silences_fit_where_the_reply_was_cut() -> None:
    from voicebox.runtime.clause_audio import COMMA_PAUSE_MS, fit_clause_audio

    rate = 16_000
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate // 4) / rate)).astype(np.float32)
    pad = np.zeros(rate // 5, np.float32)  # 200 ms before and after, as a synthesizer does
    audio = np.concatenate([pad, tone, pad])

    def lead_tail_ms(out: np.ndarray) -> tuple[float, float]:
        loud = np.flatnonzero(np.abs(out) > 0.01)
        return loud[0] / rate * 1000, (out.shape[0] - loud[-1]) / rate * 1000

    lead, tail = lead_tail_ms(fit_clause_audio(audio, rate, "I'm sorry", None))
    assert lead < 10 and tail < 15  # first clause, cut inside a phrase
    lead, tail = lead_tail_ms(fit_clause_audio(audio, rate, "for any confusion.", "I'm sorry"))
    assert lead < 10 and tail > 190  # goes on from a phrase; ends a sentence
    lead, tail = lead_tail_ms(fit_clause_audio(audio, rate, "Then, after that,", "Sure."))
    assert lead > 190 and COMMA_PAUSE_MS - 5 < tail < COMMA_PAUSE_MS + 10


def test_real_piper_clause_pause_is_trimmed() -> None:
    from voicebox.engines.piper_tts import PiperTtsEngine
    from voicebox.models.locate import packaged_path
    from voicebox.runtime.clause_audio import trim_trailing_silence

    tts = PiperTtsEngine(packaged_path("tts"))
    rate = tts.sample_rate_hz
    audio = tts.synthesize("I'm sorry")
    out = trim_trailing_silence(audio, rate, keep_ms=40)
    # Piper ends each call with a sentence pause (its length varies: VITS samples noise);
    # a clause keeps 40 ms of it.
    assert audio.shape[0] - out.shape[0] > rate // 20
    removed = audio[out.shape[0] :]
    assert float(np.sqrt((removed**2).mean())) < 10 ** (-45 / 20)  # only quiet was cut


def test_real_piper_without_noise_says_a_text_the_same_way_each_time() -> None:
    from voicebox.engines.piper_tts import PiperTtsEngine
    from voicebox.models.locate import packaged_path

    steady = PiperTtsEngine(packaged_path("tts"), noise_scale=0.0, noise_w_scale=0.0)
    a, b = steady.synthesize("Turn on the fan."), steady.synthesize("Turn on the fan.")
    assert a.shape == b.shape and np.array_equal(a, b)
    lively = PiperTtsEngine(packaged_path("tts"))  # the voice's noise: every take differs
    c, d = lively.synthesize("Turn on the fan."), lively.synthesize("Turn on the fan.")
    assert c.shape != d.shape or not np.array_equal(c, d)


def test_fast_asr_config_sets_a_greedy_final(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[1] / "configs" / "fast-asr.toml"
    assert load_config(path).asr_final_beam == 1
    assert load_config(None).asr_final_beam == 5
    bad = tmp_path / "c.toml"
    bad.write_text("asr_final_beam = 0\n")
    with pytest.raises(ConfigError, match="asr_final_beam"):
        load_config(bad)


def test_engine_threads_are_niced_and_the_callers_are_not() -> None:
    import os
    import threading

    from voicebox.runtime.priority import new_threads_lowered
    from voicebox.runtime.workers import EngineWorker

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = EngineWorker("t", nice=mine + 3)
    try:
        assert worker.call(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())) \
            == mine + 3
    finally:
        worker.close()
    started, release = threading.Event(), threading.Event()
    tids: list[int] = []

    def pool_thread() -> None:  # as CTranslate2 starts its pool while a model loads
        tids.append(threading.get_native_id())
        started.set()
        release.wait()

    with new_threads_lowered(mine + 2):
        thread = threading.Thread(target=pool_thread)
        thread.start()
        started.wait()
    try:
        assert os.getpriority(os.PRIO_PROCESS, tids[0]) == mine + 2
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    finally:
        release.set()
        thread.join()
