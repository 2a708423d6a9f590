"""The llama.cpp engine on the real SmolLM2-135M: the end-of-turn score's own KV cache."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from voicebox.engines import llama_llm
from voicebox.engines.llama_llm import LlamaEngine, scoring_messages
from voicebox.engines.protocols import ChatMessage
from voicebox.models.locate import packaged_path

SYSTEM = ChatMessage("system", "You are a helpful voice assistant.")
FINISHED = [SYSTEM, ChatMessage("user", "He might even have been made amiable himself.")]
UNFINISHED = [SYSTEM, ChatMessage("user", "and he had then leisure to")]


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    """One thread throughout (no burst), as on a one-core board."""
    llm = LlamaEngine(packaged_path("llm"), context_tokens=1024, threads=1, burst_threads=1)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def burst_engine() -> Iterator[LlamaEngine]:
    """One thread beside the other engines, two for the start of a reply."""
    llm = LlamaEngine(packaged_path("llm"), context_tokens=1024, threads=1, burst_threads=2)
    yield llm
    llm.close()


def _quoted_in_reply_context(engine: LlamaEngine) -> float:
    """The score as it was computed before it had its own context: in the reply's."""
    tokens = engine._user_prefix(scoring_messages(FINISHED))
    engine._eval_cached(tokens)
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(engine._llm._ctx.ctx, -1)
    logits = np.ctypeslib.as_array(ptr, shape=(engine._llm.n_vocab(),)).astype(np.float64)
    probs = np.exp(logits - logits.max())
    return float((probs / probs.sum())[engine._eot_ids].sum())


def test_score_is_the_quoted_framing_and_leaves_the_reply_cache(engine: LlamaEngine) -> None:
    cold = engine.end_of_turn_probability(FINISHED)
    assert engine.end_of_turn_probability(UNFINISHED) < cold

    # Warm both caches with partials (one the final contradicts), then score: the scoring
    # context re-uses its prefix and still gives the cold number.
    engine.prefill([SYSTEM, ChatMessage("user", "He might even have")])
    engine.prefill([SYSTEM, ChatMessage("user", "He might even have bean made")])
    assert engine.end_of_turn_probability(FINISHED) == pytest.approx(cold, abs=1e-9)

    # The reply context holds the reply's whole prompt, header included (put there
    # meanwhile for the reply that follows, whose first token then needs no prefill),
    # then the reply's first tokens, never the quoted framing: the score has its own cache.
    engine._settle()  # the score returns before that warm-up ends
    held = list(engine._llm.input_ids[: engine._llm.n_tokens])
    whole = engine.tokenize(engine.render(FINISHED)[0])
    assert held[: len(whole)] == whole
    assert len(held) - len(whole) < llama_llm.LOOKAHEAD_TOKENS
    assert held[: len(engine._user_prefix(FINISHED))] == engine._user_prefix(FINISHED)

    # The same number as the quoted prompt evaluated in the reply's own context.
    assert _quoted_in_reply_context(engine) == pytest.approx(cold, abs=2e-3)


def test_score_does_not_depend_on_what_was_scored_before(engine: LlamaEngine) -> None:
    # The bench's single_0890 after pause_0890 (one process, one cache): a longer sentence
    # scored, a partial that cuts the cache back to "rather" warmed, then the final. With
    # the cut-back token evaluated alone the final scored 0.2988 instead of 0.2696, and the
    # silence it required went from 554 to 262 ms.
    def said(text: str) -> list[ChatMessage]:
        return [SYSTEM, ChatMessage("user", text)]

    final = said("Unless to be rather cold-hearted and rather selfish, is to be ill-disposed.")
    engine.end_of_turn_probability(said("I'm less"))  # another prompt in the cache
    cold = engine.end_of_turn_probability(final)
    engine.end_of_turn_probability(
        said("Unless to be rather cold-hearted, and rather selfish, is to be ill-disposed."))
    engine.warm_scoring(engine._user_prefix(scoring_messages(said("Unless to be rather..."))))
    assert engine.end_of_turn_probability(final) == pytest.approx(cold, abs=1e-9)


def test_score_also_fills_the_reply_cache_with_the_reply_prompt(engine: LlamaEngine) -> None:
    # The partials prefilled other words ("And Mr. John ..." for "Mr. John ..."): the score
    # puts the final's reply prompt (bare words, header) in the reply's cache on a second
    # thread, and is the same number as without; the reply then starts from that cache.
    engine.prefill([SYSTEM, ChatMessage("user", "And he might even have")])
    cold = LlamaEngine(packaged_path("llm"), context_tokens=1024, threads=1)
    try:
        cold_reply = "".join(cold.stream(FINISHED, max_tokens=12, cancel=threading.Event()))
        expected = cold.end_of_turn_probability(FINISHED)
    finally:
        cold.close()
    assert engine.end_of_turn_probability(FINISHED) == pytest.approx(expected, abs=1e-9)
    reply = "".join(engine.stream(FINISHED, max_tokens=12, cancel=threading.Event()))
    assert reply == cold_reply


def test_score_keeps_its_system_prompt_whatever_the_reply_s(engine: LlamaEngine) -> None:
    # The silence curve was fitted on scores under one system prompt: a persona given to
    # the reply must not move them.
    pirate = [ChatMessage("system", "You are a pirate. Answer in pirate speak."), FINISHED[1]]
    assert engine.end_of_turn_probability(pirate) == pytest.approx(
        engine.end_of_turn_probability(FINISHED), abs=2e-3)


def test_reply_sees_the_bare_words(engine: LlamaEngine) -> None:
    prompt, _ = engine.render(FINISHED)
    assert "made amiable himself." in prompt and "I said" not in prompt
    reply = "".join(engine.stream(FINISHED, max_tokens=8, cancel=threading.Event()))
    assert reply.strip()


def test_the_same_conversation_gets_the_same_reply(engine: LlamaEngine) -> None:
    """The sampler is seeded for each reply: what came before in the process (other
    replies) does not change the reply to the same words. The bench (one process for all
    scenarios) and the judge (one process each) heard different replies before."""

    def reply(messages: list[ChatMessage]) -> str:
        return "".join(engine.stream(messages, max_tokens=24, cancel=threading.Event()))

    first = reply(FINISHED)
    others = [reply([SYSTEM, ChatMessage("user", f"Tell me about the number {n}.")])
              for n in range(3)]
    assert len(set(others)) > 1  # sampled: different prompts, different replies
    assert reply(FINISHED) == first


def test_weight_repacking_off_loads_without_extra_buffer_types_and_restores() -> None:
    import importlib

    from voicebox.engines.llama_llm import _weight_repacking

    bindings: Any = importlib.import_module("llama_cpp.llama_cpp")
    default = bindings.llama_model_default_params
    with _weight_repacking(False):
        assert bindings.llama_model_default_params().use_extra_bufts is False
    assert bindings.llama_model_default_params is default
    assert default().use_extra_bufts is True
    with _weight_repacking(True):
        assert bindings.llama_model_default_params is default


def test_the_model_decodes_on_this_cpu_with_both_contexts_at_once(engine: LlamaEngine) -> None:
    """On an AMX CPU the default load died at its first decode (general protection
    fault); the engine loads without the AMX buffer type there. Here the score and the
    reply's warm-up decode at the same time, as in a turn."""
    tokens = engine._user_prefix(scoring_messages(UNFINISHED))
    probs = engine.next_token_probabilities(
        tokens, warm_reply=engine.tokenize(engine.render(FINISHED)[0]))
    engine._settle()
    assert abs(float(probs.sum()) - 1.0) < 1e-6


def test_a_warmed_reply_prompt_is_not_evaluated_again(engine: LlamaEngine,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The score warms the reply's whole prompt; the reply then samples its first token
    straight from those logits (no prompt token evaluated again)."""
    caller = threading.current_thread()
    evaluated: list[int] = []
    real_eval = engine._llm.eval

    def counting_eval(tokens: list[int]) -> None:
        if threading.current_thread() is caller:  # (not the warm-up's own)
            evaluated.append(len(tokens))
        real_eval(tokens)

    monkeypatch.setattr(engine._llm, "eval", counting_eval)
    engine.end_of_turn_probability(FINISHED)
    reply = "".join(engine.stream(FINISHED, max_tokens=12, cancel=threading.Event()))
    assert reply.strip()
    assert 1 in evaluated and max(evaluated) == 1  # generated tokens only, one at a time


def _reply(engine: LlamaEngine, messages: list[ChatMessage], max_tokens: int = 16,
           cancel: threading.Event | None = None) -> list[str]:
    return list(engine.stream(messages, max_tokens=max_tokens,
                              cancel=cancel or threading.Event()))


def test_the_reply_begun_during_the_score_is_the_reply(
        engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up samples the reply's first tokens while the score runs; the reply to
    those messages takes them over, and is the reply it would have been without them."""
    threads: list[str] = []
    real_eval = engine._llm.eval

    def tracing_eval(tokens: list[int]) -> None:
        if len(tokens) == 1:
            threads.append(threading.current_thread().name)
        real_eval(tokens)

    monkeypatch.setattr(engine._llm, "eval", tracing_eval)
    engine.end_of_turn_probability(FINISHED)
    taken_over = _reply(engine, FINISHED)
    warm = [name == "vb-llm-warm" for name in threads]
    # The first token comes from the prompt's logits, each next one from its own eval.
    assert sum(warm) >= llama_llm.LOOKAHEAD_TOKENS - 1 and not all(warm)
    assert warm == sorted(warm, reverse=True)  # the warm-up's first, then the reply's
    monkeypatch.setattr(llama_llm, "LOOKAHEAD_TOKENS", 0)
    engine.end_of_turn_probability(UNFINISHED)  # another prompt in the cache meanwhile
    engine.end_of_turn_probability(FINISHED)
    assert _reply(engine, FINISHED) == taken_over


def _trace_evals(engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(thread name, llama.cpp threads) of each one-token evaluation from now on."""
    import llama_cpp

    evals: list[tuple[str, int]] = []
    real_eval = engine._llm.eval

    def tracing_eval(tokens: list[int]) -> None:
        if len(tokens) == 1:
            n = int(llama_cpp.llama_n_threads(engine._llm._ctx.ctx))
            evals.append((threading.current_thread().name, n))
        real_eval(tokens)

    monkeypatch.setattr(engine._llm, "eval", tracing_eval)
    return evals


def test_a_reply_starts_on_the_burst_threads_and_says_the_same(
        engine: LlamaEngine, burst_engine: LlamaEngine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After the score, the warm-up hands the reply over (it stops after the token it is
    on), and the reply samples its first ``BURST_TOKENS`` on two threads, the rest on one.
    The words are those of the engine that never bursts."""
    engine.end_of_turn_probability(FINISHED)
    plain = _reply(engine, FINISHED, max_tokens=12)
    evals = _trace_evals(burst_engine, monkeypatch)
    # The warm-up's prompt is done only once the score is (which of the two finishes
    # first is a race on a loaded machine): it then samples its first token alone.
    real_eval_reply = burst_engine._eval_reply_context

    def prompt_after_the_score(tokens: list[int]) -> None:
        ahead = burst_engine._ahead
        real_eval_reply(tokens)
        if threading.current_thread().name == "vb-llm-warm" and ahead is not None:
            assert ahead.handover.wait(timeout=30)

    monkeypatch.setattr(burst_engine, "_eval_reply_context", prompt_after_the_score)
    burst_engine.end_of_turn_probability(FINISHED)
    burst = _reply(burst_engine, FINISHED, max_tokens=12)
    assert burst == plain
    warm = [n for name, n in evals if name == "vb-llm-warm"]
    own = [n for name, n in evals if name != "vb-llm-warm"]
    assert warm == []  # its one token came from the prompt's logits
    # Each evaluation samples the next token: the one after token i is evaluated with
    # the threads in force once i tokens were yielded.
    expect = [2 if 1 + i < llama_llm.BURST_TOKENS else 1 for i in range(len(own))]
    assert own == expect and 2 in own and 1 in own
    # Back on one thread for the warm-ups while the user speaks.
    burst_engine.prefill(UNFINISHED)
    assert int(__import__("llama_cpp").llama_n_threads(burst_engine._llm._ctx.ctx)) == 1


def test_a_reply_without_a_score_bursts_from_its_prefill(
        burst_engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    evals = _trace_evals(burst_engine, monkeypatch)
    words = _reply(burst_engine, UNFINISHED, max_tokens=10)
    assert len(words) == 10
    threads = [n for _, n in evals]
    assert threads[: llama_llm.BURST_TOKENS - 1] == [2] * (llama_llm.BURST_TOKENS - 1)
    assert set(threads[llama_llm.BURST_TOKENS - 1 :]) == {1}


def test_a_reply_to_other_words_drops_the_reply_begun(engine: LlamaEngine) -> None:
    plain = _reply(engine, UNFINISHED)
    engine.end_of_turn_probability(FINISHED)  # begins the reply to FINISHED
    assert _reply(engine, UNFINISHED) == plain
    assert engine._ahead is None and engine._warming is None


def test_a_reply_begun_obeys_its_caller(engine: LlamaEngine) -> None:
    """Cancelled before it starts, a taken-over reply yields nothing and leaves the
    engine whole; ``max_tokens`` below the look-ahead cuts it there."""
    full = _reply(engine, FINISHED)
    engine.end_of_turn_probability(FINISHED)
    stopped = threading.Event()
    stopped.set()
    assert _reply(engine, FINISHED, cancel=stopped) == []
    engine.end_of_turn_probability(FINISHED)
    assert _reply(engine, FINISHED, max_tokens=2) == full[:2]
    assert _reply(engine, FINISHED) == full
