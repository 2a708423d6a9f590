"""Known commands (hassil intents): matching, bad files, and the turns they confirm."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import RealEngines
from tests.fakes import EnergyVad, FixedAsr, ScoringLlm, fake_engines, silence, speechlike
from tests.test_cli import assert_one_line_error, good_wav, voicebox  # noqa: F401
from voicebox.config import Config, ConfigError, IntentsConfig, TurnConfig, load_config
from voicebox.engines.piper_tts import PiperTtsEngine
from voicebox.events import (
    EndOfTurnScored,
    Event,
    EventLog,
    IntentRecognized,
    ReplyDone,
    TurnEnded,
)
from voicebox.models.locate import packaged_path
from voicebox.runtime.intents import IntentMatcher
from voicebox.runtime.session import SimulationResult, simulate

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "intents-example.yaml"


@pytest.fixture(scope="module")
def matcher() -> IntentMatcher:
    return IntentMatcher.from_file(EXAMPLE)


@pytest.mark.parametrize(("text", "name", "slots", "could_go_on"), [
    ("Turn on the lights.", "TurnOn", {"device": "lights"}, False),
    ("switch the kitchen lights off", "TurnOff", {"device": "kitchen lights"}, False),
    ("Stop!", "Stop", {}, False),
    ("Set a timer for ten minutes.", "SetTimer", {"minutes": 10}, False),
    ("Set a timer for 10 minutes", "SetTimer", {"minutes": 10}, False),
    ("Go forward", "Move", {"direction": "forward"}, True),  # "go forward two meters"
    ("Go forward two meters.", "Move", {"direction": "forward", "meters": 2}, False),
    ("go forward one meter", "Move", {"direction": "forward", "meters": 1}, False),
    # The file's skip words, one word or several, wherever they are said.
    ("Could you please turn on the kitchen lights?", "TurnOn", {"device": "kitchen lights"},
     False),
    ("Can you stop, please?", "Stop", {}, False),
    ("Please go forward", "Move", {"direction": "forward"}, True),
])
def test_whole_sentences_match_with_their_slots(
    matcher: IntentMatcher, text: str, name: str, slots: dict[str, object], could_go_on: bool
) -> None:
    match = matcher.match(text)
    assert match is not None
    assert (match.name, match.slots, match.text, match.open) == (name, slots, text, could_go_on)


CARDS = """
language: en
intents:
  Cards:
    data:
      - sentences: ["<card>", "<card> <card>", "<card> <card> <card>", "{rank} <card>"]
  Pass:
    data:
      - sentences: ["pass", "say {anything}"]
        wildcard_lists: ["anything"]
expansion_rules:
  card: "{rank} [of] {suit}"
lists:
  rank: {values: [ace, two, three, four, five, six, seven, eight, nine, ten, jack, queen, king]}
  suit: {values: [clubs, hearts, diamonds, spades]}
  anything: {wildcard: true}
"""


@pytest.mark.parametrize(("text", "could_go_on"), [
    ("Eight of spades.", True),  # one card of up to three
    ("eight spades, four of clubs", True),
    ("Eight of spades, four of clubs, seven of hearts.", False),
    ("four queen of clubs", False),  # a rank before a card: no longer sentence begins so
    ("pass", False),
    ("say hello", True),  # a wildcard takes any more words
    ("unknown words", True),  # no template takes them: the cautious answer
])
def test_whether_words_could_go_on_follows_the_templates(
    text: str, could_go_on: bool
) -> None:
    from hassil import Intents

    from voicebox.runtime.intent_prefix import could_go_on as check

    assert check(Intents.from_dict(yaml.safe_load(CARDS)), text) is could_go_on


@pytest.mark.parametrize("text", [
    "Turn on the", "set a timer for", "turn on the lights in the kitchen", "stop moving",
    "What time is it?", "", "   ",
])
def test_a_beginning_or_other_words_match_nothing(matcher: IntentMatcher, text: str) -> None:
    assert matcher.match(text) is None


@pytest.mark.parametrize(("content", "fragment"), [
    ('language: en\nintents:\n  A:\n    data:\n      - sentences: ["turn on {nolist}"]\n',
     "no list {nolist}"),
    ('language: en\nintents:\n  A:\n    data:\n      - sentences: ["turn <nothing>"]\n',
     "no rule <nothing>"),
    ('language: en\nintents:\n  A:\n    data:\n      - sentences: ["<card>"]\n'
     'expansion_rules:\n  card: "{rank} of {suit}"\nlists:\n  rank: {values: [ace]}\n',
     "no list {suit}"),
    ('language: en\nintents:\n  A:\n    data:\n      - sentences: ["turn on (the"]\n',
     "end of group"),
    ("intents: [\n", "not YAML"),
    ("language: en\nintents: {}\n", "defines no intents"),
    ("- just\n- a list\n", "needs an 'intents:' mapping"),
    ("language: en\nintents:\n  A:\n    data: 5\n", "intents file"),
    ('intents:\n  A:\n    data:\n      - sentences: ["go"]\n', "missing key 'language'"),
    # Shapes hassil takes without a word and then never matches:
    ('language: en\nskip_words: 5\nintents:\n  A:\n    data:\n      - sentences: [go]\n',
     "skip_words: must be a list"),
    ("language: en\nintents:\n  A:\n    data:\n      - sentences: stop\n",
     "intent A, data 1: sentences: must be a list"),
    ("language: en\nintents:\n  A:\n    data:\n      - sentences: [go]\n"
     "        requires_context: 5\n", "requires_context: must be a mapping"),
])
def test_a_bad_intents_file_is_a_one_line_config_error(
    tmp_path: Path, content: str, fragment: str
) -> None:
    path = tmp_path / "intents.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        IntentMatcher.from_file(path)
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_digits_match_a_list_of_number_words() -> None:
    """Whisper writes "10 of clubs"; a template's list may say "ten"."""
    from hassil import Intents

    cards = IntentMatcher(Intents.from_dict(yaml.safe_load(CARDS)))
    match = cards.match("10 of clubs.")
    assert match is not None and match.slots == {"rank": "ten", "suit": "clubs"}
    assert match.text == "10 of clubs." and match.open  # a second card may follow
    assert cards.match("11 of clubs") is None


def test_a_missing_intents_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absent.yaml: not found"):
        IntentMatcher.from_file(tmp_path / "absent.yaml")


def test_the_intents_section_of_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[intents]\nfile = "{EXAMPLE}"\nsilence_ms = 150\n', encoding="utf-8")
    assert load_config(path).intents == IntentsConfig(file=EXAMPLE, silence_ms=150)
    path.write_text("[intents]\nsilence_ms = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="silence_ms"):
        load_config(path)


def test_cli_rejects_a_bad_intents_file_before_loading_models(
    tmp_path: Path, good_wav: Path  # noqa: F811
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("intents: [\n", encoding="utf-8")
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(tmp_path / "o.wav"),
                 "--intents", str(bad), timeout=60)
    assert_one_line_error(p, "intents file", "not YAML")


def _run_fake(text: str, intents: Path | None, *, asr: FixedAsr | None = None,
              config: Config | None = None) -> tuple[list[Event], ScoringLlm]:
    """One fake turn heard as ``text``; the LLM is unsure (score 0.1), so without an
    intent the curve's full wait applies."""
    config = config or Config(
        turn=TurnConfig(silence_curve=((0.5, 700), (0.8, 300)), end_of_turn_ms=900),
        intents=IntentsConfig(file=intents, silence_ms=120, open_silence_ms=500))
    llm = ScoringLlm(probability=0.1)
    eng = fake_engines(asr=asr or FixedAsr(text), llm=llm)
    audio = np.concatenate([silence(0.3), speechlike(0.8), silence(2.0)])

    async def go() -> SimulationResult:
        return await asyncio.wait_for(
            simulate(audio, 16_000, config=config, vad=EnergyVad(), engines=eng,
                     log=EventLog(), speed=4.0),
            timeout=60,
        )

    try:
        return asyncio.run(go()).events, llm
    finally:
        for w in (eng.vad_worker, eng.asr_worker, eng.llm_worker, eng.tts_worker):
            w.close()


def test_a_known_command_is_confirmed_after_its_short_silence() -> None:
    ev, llm = _run_fake("Turn on the lights.", EXAMPLE)
    scored = [e for e in ev if isinstance(e, EndOfTurnScored)]
    ended = [e for e in ev if isinstance(e, TurnEnded)]
    intents = [e for e in ev if isinstance(e, IntentRecognized)]
    assert [(s.intent, s.required_silence_ms) for s in scored] == [("TurnOn", 120)]
    assert [(e.reason, e.silence_ms < 300) for e in ended] == [("intent", True)]
    assert [(i.turn, i.name, i.slots) for i in intents] == [(0, "TurnOn", {"device": "lights"})]
    assert llm.scored == []  # the command's words need no end-of-turn score
    # The file's response is the reply; the LLM is not asked for one.
    assert [e.text for e in ev if isinstance(e, ReplyDone)] == ["Turning on the lights."]
    assert llm.prompts == []


def test_without_a_response_the_llm_answers_the_command(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    del data["responses"]
    path = tmp_path / "intents.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    ev, llm = _run_fake("Turn on the lights.", path)
    assert [e.reason for e in ev if isinstance(e, TurnEnded)] == ["intent"]
    assert [e.text for e in ev if isinstance(e, ReplyDone)] == [llm.reply]
    assert len(llm.prompts) == 1 and llm.scored == []


def test_responses_fill_in_the_slots(matcher: IntentMatcher) -> None:
    said = {t: m.response for t in ("Set a timer for 10 minutes", "switch off the fan", "Stop")
            if (m := matcher.match(t)) is not None}
    assert said == {"Set a timer for 10 minutes": "Timer set for 10 minutes.",
                    "switch off the fan": "Turning off the fan.", "Stop": "Stopping."}


@pytest.mark.parametrize(("responses", "fragment"), [
    ("responses:\n  Nope: hi\n", "no intent Nope"),
    ("responses:\n  A: ''\n", "A: must be a non-empty string"),
    ("responses:\n  A: 'on {'\n", "A: "),
    ("responses: [1]\n", "must map intent names"),
    ("responses:\n  A: 'for {x.y}'\n", "{x.y}: only plain {slot} names"),
    ("responses:\n  A: 'in {minutes:s}'\n", "{minutes:s}: only plain {slot} names"),
])
def test_bad_responses_are_a_config_error(tmp_path: Path, responses: str, fragment: str) -> None:
    path = tmp_path / "intents.yaml"
    path.write_text("language: en\nintents:\n  A:\n    data:\n      - sentences: [stop]\n"
                    + responses, encoding="utf-8")
    with pytest.raises(ConfigError, match="responses") as info:
        IntentMatcher.from_file(path)
    assert fragment in str(info.value)


def test_a_command_that_could_go_on_waits_longer_and_is_scored() -> None:
    ev, llm = _run_fake("Go forward.", EXAMPLE)  # "go forward two meters" is a command too
    scored = [e for e in ev if isinstance(e, EndOfTurnScored)]
    assert [(s.intent, s.required_silence_ms) for s in scored] == [("Move", 500)]
    assert [e.reason for e in ev if isinstance(e, TurnEnded)] == ["intent"]
    assert [i.name for i in ev if isinstance(i, IntentRecognized)] == ["Move"]
    assert llm.scored == ["Go forward."]


def test_other_words_wait_as_the_curve_says() -> None:
    for intents in (EXAMPLE, None):
        ev, llm = _run_fake("Turn on the", intents)
        scored = [e for e in ev if isinstance(e, EndOfTurnScored)]
        assert [(s.intent, s.required_silence_ms) for s in scored] == [(None, 900)]
        assert not any(isinstance(e, IntentRecognized) for e in ev)
        assert llm.scored == ["Turn on the"]


@pytest.mark.slow
def test_a_spoken_command_through_the_real_pipeline(
    real_engines: RealEngines
) -> None:
    """Piper says a command, the real VAD, Whisper and LLM hear it: with the intents file
    it is confirmed as the command; without, the LLM's score decides as for any words."""
    vad, engines = real_engines
    # Piper without its noise: the same take every run (with it, tiny.en heard one take
    # in 8 as "Card on the kitchen whites.", which no template matches).
    tts = PiperTtsEngine(packaged_path("tts"), noise_scale=0.0, noise_w_scale=0.0)
    speech = tts.synthesize("Turn on the kitchen lights.")
    rate = tts.sample_rate_hz
    audio = np.concatenate([np.zeros(rate // 2, np.float32), speech,
                            np.zeros(2 * rate, np.float32)])

    def run(intents: Path | None) -> list[Event]:
        async def go() -> SimulationResult:
            # The longest silence well past the 200 ms a command takes, so that a final
            # transcript slowed by a loaded host (850 ms seen) cannot let it end the turn.
            config = Config(turn=TurnConfig(end_of_turn_ms=1800),
                            intents=IntentsConfig(file=intents))
            return await asyncio.wait_for(
                simulate(audio, rate, config=config,
                         vad=vad, engines=engines, log=EventLog()),
                timeout=120,
            )
        return asyncio.run(go()).events

    ev = run(EXAMPLE)
    intents = [e for e in ev if isinstance(e, IntentRecognized)]
    assert [(i.name, i.slots) for i in intents] == [("TurnOn", {"device": "kitchen lights"})]
    ended = [e for e in ev if isinstance(e, TurnEnded)]
    assert [e.reason for e in ended] == ["intent"]
    scored = [e for e in ev if isinstance(e, EndOfTurnScored)]
    assert scored[-1].required_silence_ms == 200 and scored[-1].llm_probability is None
    assert [e.text for e in ev if isinstance(e, ReplyDone)] == ["Turning on the kitchen lights."]

    ev = run(None)
    assert not any(isinstance(e, IntentRecognized) for e in ev)
    scored = [e for e in ev if isinstance(e, EndOfTurnScored)]
    assert scored[-1].intent is None and scored[-1].llm_probability is not None
    assert [e.reason for e in ev if isinstance(e, TurnEnded)] != ["intent"]


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    """README's "Use from Python" block, on the one recorded command of the test data."""
    import re
    import subprocess
    import sys

    from voicebox.audio.wav import write_wav
    from voicebox.bench.scenarios import TESTDATA

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## Use from Python.*?```python\n(.*?)```", readme, re.S)
    assert code is not None
    raw = np.fromfile(TESTDATA / "goforward.raw", dtype="<i2").astype(np.float32) / 32768
    wav = tmp_path / "in.wav"
    write_wav(wav, np.concatenate([np.zeros(8000, np.float32), raw,
                                   np.zeros(48_000, np.float32)]), 16_000)
    script = code.group(1).replace('"in.wav"', repr(str(wav))).replace(
        '"out.wav"', repr(str(tmp_path / "out.wav")))
    p = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Move {'direction': 'forward', 'meters': 10}" in p.stdout


def test_cli_reads_sentences_against_an_intents_file(tmp_path: Path) -> None:
    p = voicebox("intents", str(EXAMPLE), "Turn on the kitchen lights.", "Go forward",
                 timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("'Turn on the kitchen lights.': TurnOn(device=kitchen lights);")
    assert "finished" in lines[0] and "Turning on the kitchen lights." in lines[0]
    assert lines[1].startswith("'Go forward': Move(direction=forward);")
    assert "could go on" in lines[1] and "Moving forward." in lines[1]
    p = voicebox("intents", str(EXAMPLE), "hello there", timeout=60)
    assert p.returncode == 1 and "no intent" in p.stdout
    p = voicebox("intents", str(EXAMPLE), timeout=60)
    assert p.returncode == 0 and "6 intents: Stop, TurnOn" in p.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("language: en\nintents:\n  A:\n    data:\n      - sentences: ['{x}']\n",
                   encoding="utf-8")
    assert_one_line_error(voicebox("intents", str(bad), timeout=60), "no list {x}")


def test_the_intent_is_announced_when_the_turn_ended_before_its_words_were_read() -> None:
    text = "Turn on the lights."
    config = Config(turn=TurnConfig(end_of_turn_ms=300), intents=IntentsConfig(file=EXAMPLE))
    ev, _ = _run_fake(text, EXAMPLE, asr=FixedAsr(text, delay_s=0.8), config=config)
    names = [type(e).__name__ for e in ev]
    assert [e.reason for e in ev if isinstance(e, TurnEnded)] == ["silence"]
    assert names.count("IntentRecognized") == 1
    assert names.index("TurnEnded") < names.index("TranscriptFinal") < names.index(
        "IntentRecognized")
