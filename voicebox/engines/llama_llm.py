"""LLM engine on llama.cpp (llama-cpp-python): the model's own chat template, streamed."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voicebox.config import DEFAULT_SYSTEM_PROMPT
from voicebox.engines import gguf
from voicebox.engines.protocols import ChatMessage
from voicebox.engines.requantize import DEFAULT_TARGET, prompt_fast_weights
from voicebox.errors import ModelError
from voicebox.models.locate import install_hint

END_OF_TURN_MARKS = (".", "?", "!", '"', '."', '?"', '!"')
"""What may follow finished words (scored with the user's words quoted: ``SAID``); the
first token of each counts."""

SAID = 'I said: "{}"'
"""How the user's words are put to the model for the end-of-turn score only: quoted, so
the probability of the closing quote (or a sentence mark) right after the words says
whether they are finished. Over every word gap of the test clips this scored ends above
mid-phrase pauses far more often than the bare words did (BENCHMARKS.md section 5). The
reply sees the bare words: a model answering "I said: ..." hears a correction and
apologises (SmolLM2-135M began 10 of 29 replies "I'm sorry", against 3 bare)."""

_LOGGER = logging.getLogger(__name__)

LOOKAHEAD_TOKENS = 4
"""Reply tokens the warm-up thread samples while the end-of-turn score runs (about a first
clause). The reply to those messages takes them over, with the rest of the same sampling;
a reply to other words drops them. Sampled as the reply would sample them: the same
prompt in the cache, the same seed and settings, so a reply is the same either way."""

BURST_TOKENS = 4
"""Reply tokens sampled on ``burst_threads`` (about the first clause: up to three words
and the start of the fourth): nothing else computes while the user waits for them, and
after them the TTS needs the cores for the first clause."""


def default_threads() -> int:
    """Leave one core for the audio thread and the event loop."""
    return max(1, (os.cpu_count() or 2) - 1)


def usable_cores() -> int:
    """The cores this process may run on (``taskset`` counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


SCORING_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT
"""The system prompt of every end-of-turn score, whatever the reply's: the silence curve
(``[turn] silence_curve``) was fitted on scores under this prompt, and another persona
would move every score (and with it the cut-offs) without a refit."""


def scoring_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """``messages`` as the end-of-turn score puts them: ``SCORING_SYSTEM_PROMPT`` for the
    system prompt, every user message with words quoted (``SAID``)."""
    out = []
    for m in messages:
        if m.role == "system":
            m = ChatMessage("system", SCORING_SYSTEM_PROMPT)
        elif m.role == "user" and strip_trailing_punctuation(m.content):
            m = ChatMessage("user", SAID.format(m.content))
        out.append(m)
    return out


class LlamaEngine:
    """A GGUF chat model run by llama.cpp.

    llama.cpp keeps the KV cache of the last prompt and re-uses its longest common
    token prefix, so the system prompt and earlier turns are not prefilled again. The
    end-of-turn score (its own framing of the user's words, ``SAID``) runs in a second
    context on the same weights, so neither prompt evicts the other's cache.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int = 2048,
        threads: int | None = None,
        temperature: float = 0.3,
        seed: int = 7,
        requantize: str | None = DEFAULT_TARGET,
        burst_threads: int | None = None,
    ) -> None:
        """``threads``: llama.cpp's threads while the ASR or the TTS may be busy too (the
        warm-ups while the user speaks, the reply after its first clause). ``burst_threads``
        (None: every usable core): the threads for the start of a reply, from the end of
        the end-of-turn score to the first ``BURST_TOKENS`` tokens, when the user is
        waiting and nothing else computes (here 24 -> 14 ms a token, two threads)."""
        check_gguf(model_path)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = threads or default_threads()
        self._threads = threads
        self._burst_threads = max(threads, burst_threads or usable_cores())
        self._threads_now = threads
        weights = prompt_fast_weights(model_path, requantize)
        try:
            self._llm = _load(weights, context_tokens, threads, seed)
        except ModelError as exc:
            if weights == model_path:
                raise
            _LOGGER.warning("%s; loading %s as it is", exc, model_path)
            weights.unlink(missing_ok=True)
            weights = model_path
            self._llm = _load(weights, context_tokens, threads, seed)
        meta = self._llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"LLM model {model_path} has no chat template in its metadata")
        vocab = self._llm
        eos = vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "ignore")
        bos = vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "ignore")
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._eos = eos
        self._eot_ids = sorted(
            {t for c in (*END_OF_TURN_MARKS, eos) for t in self.tokenize(c)[:1]})
        self._temperature = temperature
        self._seed = seed
        self._scoring = _ScoringContext(self._llm)
        self._warming: threading.Thread | None = None
        """The thread putting a reply's prompt in the reply context, if one may still run."""
        self._ahead: _Ahead | None = None
        """The reply that thread began, until a reply takes it over or it is dropped."""
        self._stop = tuple(self.render([ChatMessage("user", "Hello.")])[1])
        """The template's stop strings (the reply the warm-up begins stops at them)."""
        self.model_path = model_path
        self.weights_path = weights
        """What llama.cpp loaded: ``model_path`` or its cached requantization."""
        self.name = model_path.stem

    @property
    def context_tokens(self) -> int:
        return int(self._llm.n_ctx())

    def render(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        """The prompt text (with the assistant header) and the template's stop strings."""
        rendered: Any = [_as_dict(m) for m in messages]  # llama_cpp's TypedDicts, by shape
        response = self._formatter(messages=rendered)
        stop = response.stop if isinstance(response.stop, list) else [response.stop or self._eos]
        return response.prompt, [s for s in stop if s]

    def tokenize(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        prompt, _ = self.render(messages)
        return len(self.tokenize(prompt))

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        prompt, stop = self.render(messages)
        yield from self.stream_prompt(prompt, stop, max_tokens=max_tokens, cancel=cancel)

    def stream_prompt(
        self, prompt: str, stop: list[str], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        """Continue an already rendered ``prompt`` (used by the emulated card).

        Every reply is sampled from the same seed, so the same prompt gets the same reply.
        llama-cpp-python otherwise moves the seed on with each completion, and a reply
        depended on how many came before it in the process: the bench (one process for
        every scenario) and the judge (one process each) heard different replies to the
        same words ("This is a ..." / "I'm sorry ...": first TTS audio ~60 vs ~30 ms).
        A reply the end-of-turn score's warm-up began for this prompt is taken over
        (``LOOKAHEAD_TOKENS``). ``max_tokens`` counts the pieces yielded (one a token,
        but for text llama-cpp-python holds back while it could begin a stop string).
        """
        tokens = self.tokenize(prompt)
        ahead = self._ahead
        if ahead is not None and ahead.key == (tuple(tokens), tuple(stop)):
            self._ahead = None
        else:
            ahead = None  # (``_begin`` drops it)
        chunks: Any = None
        done = 0
        try:
            if ahead is None:
                chunks = self._begin(tokens, stop)
            else:
                while done < max_tokens and (piece := ahead.pieces.get()) is not None:
                    if cancel.is_set():
                        return
                    done += 1
                    yield piece
                self._settle()  # the warm-up has stopped sampling: the rest is ours
                chunks = ahead.chunks
                if chunks is None:  # it stopped (or failed) before it began sampling
                    if done:
                        return
                    chunks = self._begin(tokens, stop)
                elif done < BURST_TOKENS:
                    self._set_threads(self._burst_threads)
            for chunk in chunks:
                if done >= max_tokens or cancel.is_set():
                    break
                text = chunk["choices"][0]["text"]
                if text:
                    done += 1
                    self._end_burst(done)
                    yield text
        finally:
            if ahead is not None:
                self._settle()
                chunks = ahead.chunks if chunks is None else chunks
            if chunks is not None:
                chunks.close()
            self._set_threads(self._threads)

    def _begin(self, tokens: list[int], stop: Sequence[str]) -> Any:
        """Start sampling a reply to ``tokens`` in the reply context."""
        # The prompt's end goes through ``reused_prefix`` here, so the first token is
        # always sampled from logits of a batch of at least two: llama-cpp-python would
        # re-evaluate a fully cached prompt's last token alone, and with Q8_0 weights
        # (llamafile's sgemm for batches, a dot product per row for one token) that
        # changed the sampled reply with what the cache held before.
        self._eval_cached(tokens, threads=self._burst_threads)
        return self._completion(tokens, stop)

    def _end_burst(self, done: int) -> None:
        """Back to ``threads`` once ``done`` reply tokens make a first clause."""
        if done >= BURST_TOKENS:
            self._set_threads(self._threads)

    def _set_threads(self, n: int) -> None:
        """The reply context's threads from its next evaluation on (llama.cpp reads them
        at each decode). Called on the LLM's own thread with no warm-up sampling: on the
        warm-up's thread two threads made each token slower (``_Ahead.handover``)."""
        if n != self._threads_now:
            self._llm._ctx.set_n_threads(n, n)
            self._threads_now = n

    def _completion(self, tokens: list[int], stop: Sequence[str]) -> Any:
        return self._llm.create_completion(
            prompt=tokens,
            max_tokens=None,  # up to the context's end: ``stream_prompt`` counts
            temperature=self._temperature,
            repeat_penalty=1.1,
            stop=list(stop),
            stream=True,
            seed=self._seed,
        )

    def end_of_turn_probability(self, messages: Sequence[ChatMessage]) -> float:
        """Probability that the last user message is a finished turn.

        The user's words are quoted (``scoring_messages``), the prompt is cut right after
        them, and the mass the model puts on a closing quote, ``.``, ``?``, ``!`` or the
        end-of-message token is returned. Prefix-cached in the scoring context; meanwhile
        the reply's context prefills the whole reply prompt, its header included
        (``warm_reply``), as the reply to these messages comes next: one batch there costs
        less than the words now and the header in a batch of its own when the reply starts
        (here 75 ms for 8 tokens against 38 + 100 ms for 2 and then 7). The score returns
        without waiting for that prefill; the reply waits for what is left of it.
        """
        tokens = self._user_prefix(scoring_messages(messages))
        if not tokens:
            return 0.0
        probs = self.next_token_probabilities(
            tokens, warm_reply=self.tokenize(self.render(messages)[0]))
        return float(probs[self._eot_ids].sum())

    def next_token_probabilities(
        self, tokens: Sequence[int], *, warm_reply: Sequence[int] = ()
    ) -> np.ndarray[Any, Any]:
        """Next-token distribution after ``tokens``, evaluated in the scoring context.

        ``warm_reply``: tokens to put in the reply's KV cache at the same time, on a second
        thread (the two contexts share the weights only). That thread may outlast this
        call: whatever uses the reply context next waits for it first (``_settle``). When
        the final transcript is not what the partials prefilled, both caches miss; one
        after the other, the two prefills took ~100 + ~125 ms here for a 20-word sentence.
        """
        if not warm_reply:
            return self._scoring.probabilities(tokens)
        self._settle()
        self._set_threads(self._threads)  # beside the score, a core each
        tokens_reply = list(warm_reply)
        ahead = _Ahead((tuple(tokens_reply), self._stop)) if LOOKAHEAD_TOKENS else None
        self._ahead = ahead
        self._warming = threading.Thread(
            target=self._warm_reply, args=(tokens_reply, ahead), name="vb-llm-warm")
        self._warming.start()
        probs = self._scoring.probabilities(tokens)
        if ahead is not None and self._burst_threads > self._threads:
            ahead.handover.set()
        return probs

    def prefill(self, messages: Sequence[ChatMessage]) -> None:
        """Evaluate the prompt up to the user's words so a later reply finds it cached,
        and the same words as the end-of-turn score frames them in the scoring context."""
        tokens = self._user_prefix(messages)
        if tokens:
            self._eval_cached(tokens)
            self.warm_scoring(self._user_prefix(scoring_messages(messages)))

    def warm_scoring(self, tokens: Sequence[int]) -> None:
        """Put ``tokens`` in the scoring context's KV cache without reading them out."""
        if tokens:
            self._scoring.probabilities(tokens)

    def _user_prefix(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Tokens of the prompt cut right after the last user message's words."""
        user = strip_trailing_punctuation(messages[-1].content)
        if not user:
            return []
        prompt, _ = self.render([*messages[:-1], ChatMessage("user", user)])
        return self.tokenize(prompt[: prompt.rfind(user) + len(user)])

    def _warm_reply(self, tokens: list[int], ahead: _Ahead | None) -> None:
        try:
            self._eval_reply_context(tokens)
            if ahead is not None:
                ahead.chunks = chunks = self._completion(tokens, ahead.key[1])
                for n, chunk in enumerate(chunks, 1):
                    if text := chunk["choices"][0]["text"]:
                        ahead.pieces.put(text)
                    if n >= LOOKAHEAD_TOKENS or ahead.handover.is_set():
                        break
        except Exception as exc:  # the reply then prefills them itself
            _LOGGER.warning("warming the reply's cache failed: %s", exc)
        finally:
            if ahead is not None:
                ahead.pieces.put(None)

    def _settle(self) -> None:
        """Wait for a warm-up of the reply context still running (one thread at a time
        may use a llama.cpp context), and drop a reply it began that nobody took over."""
        warming, self._warming = self._warming, None
        if warming is not None:
            warming.join()
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.chunks is not None:
            ahead.chunks.close()

    def _eval_cached(self, tokens: list[int], *, threads: int | None = None) -> None:
        """Evaluate ``tokens``, re-using the longest prefix already in the KV cache, on
        ``threads`` (None: the engine's ``threads``, as for a warm-up beside the ASR)."""
        self._settle()
        self._set_threads(threads or self._threads)
        self._eval_reply_context(tokens)

    def _eval_reply_context(self, tokens: list[int]) -> None:
        llm = self._llm
        cached = [int(t) for t in llm.input_ids[: llm.n_tokens]]
        if cached == tokens and not llm._requires_eval:
            return  # the last evaluation ended here: its logits are live, from a batch
        llm.n_tokens = reused_prefix(cached, tokens)
        llm.eval(tokens[llm.n_tokens :])

    def close(self) -> None:
        self._settle()
        with contextlib.suppress(Exception):
            self._scoring.close()  # before the model its context points into
            self._llm.close()


@dataclass
class _Ahead:
    """A reply the warm-up thread began: for which prompt and stop strings, what it
    sampled so far (``None`` once it stopped), and the sampling to go on with."""

    key: tuple[tuple[int, ...], tuple[str, ...]]
    pieces: queue.SimpleQueue[str | None] = field(default_factory=queue.SimpleQueue)
    chunks: Any = None
    handover: threading.Event = field(default_factory=threading.Event)
    """Set when the score is done and the reply may sample on ``burst_threads``: the
    warm-up stops after its current token (on its own thread the extra llama.cpp thread
    made each token slower, 22 -> 40 ms; on the thread that scored, faster: 22 -> 14)."""


class _ScoringContext:
    """A second llama.cpp context (own KV cache, shared weights) with prefix re-use."""

    def __init__(self, llm: Any) -> None:
        from llama_cpp import _internals

        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(
            n_tokens=int(params.n_batch), embd=0, n_seq_max=1, verbose=False)
        self._n_batch = int(params.n_batch)
        self._n_vocab = int(llm.n_vocab())
        self._tokens: list[int] = []

    def probabilities(self, tokens: Sequence[int]) -> np.ndarray[Any, Any]:
        n = reused_prefix(self._tokens, tokens)
        self._tokens = self._tokens[:n]
        self._ctx.kv_cache_seq_rm(-1, n, -1)
        for i in range(n, len(tokens), self._n_batch):
            chunk = list(tokens[i : i + self._n_batch])
            self._batch.set_batch(batch=chunk, n_past=i, logits_all=False)
            self._ctx.decode(self._batch)
            self._tokens += chunk
        logits = np.ctypeslib.as_array(self._ctx.get_logits_ith(-1), shape=(self._n_vocab,))
        probs: np.ndarray[Any, Any] = np.exp(logits.astype(np.float64) - float(logits.max()))
        return probs / float(probs.sum())

    def close(self) -> None:
        self._batch.close()  # type: ignore[no-untyped-call]
        self._ctx.close()  # type: ignore[no-untyped-call]


REDECODE_TOKENS = 2
"""Cached prompts are re-evaluated from at least this many tokens before their end.
llama.cpp computes a token evaluated alone, right after the cache was cut back, slightly
differently from the same token in a batch (SmolLM2: 0.0357 vs 0.0383 after "Unless to be
rather"), and every later token that attends to it inherits the difference: the same
words scored 0.2988 or 0.2696 depending on what was scored before. Two tokens make the
result independent of the cache's history (``scripts/score_determinism.py``)."""


def reused_prefix(cached: Sequence[int], tokens: Sequence[int]) -> int:
    """How much of a KV cache holding ``cached`` to keep before evaluating ``tokens``:
    their common prefix, less enough that ``REDECODE_TOKENS`` are evaluated together."""
    return max(0, min(common_prefix(cached, tokens), len(tokens) - REDECODE_TOKENS))


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share (what a KV cache holding ``a`` re-uses)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _load(path: Path, context_tokens: int, threads: int, seed: int) -> Any:
    """A ``Llama`` on ``path``; ModelError if llama.cpp cannot load it."""
    from llama_cpp import Llama

    amx = cpu_has_amx()
    if amx:
        _LOGGER.info("llama.cpp: AMX CPU, loading without its AMX buffer type")
    try:
        with quiet_stderr(), _weight_repacking(not amx):
            return Llama(
                model_path=str(path),
                n_ctx=context_tokens,
                n_threads=threads,
                # Prompt evaluation too: llama.cpp defaults it to every core, and
                # its spinning barrier then fights the ASR and TTS threads.
                n_threads_batch=threads,
                n_batch=256,
                seed=seed,
                verbose=False,
            )
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load LLM model {path}: {exc}") from exc


def cpu_has_amx() -> bool:
    """Whether llama.cpp's CPU backend sees Intel AMX (its own check, in libggml-cpu)."""
    import ctypes

    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"
    try:
        return bool(ctypes.CDLL(str(lib)).ggml_cpu_has_amx_int8())
    except (OSError, AttributeError):  # another build layout: no AMX backend to avoid
        return False


@contextlib.contextmanager
def _weight_repacking(enabled: bool) -> Iterator[None]:
    """Load with llama.cpp's extra weight buffer types (AMX, CPU repacking) on or off.

    On a CPU with AMX, llama-cpp-python 0.3.36's AMX buffer type puts the Q4_1 weights in
    tiles, and the first decode dies of a general protection fault in libggml-cpu (seen
    on a virtualised Xeon with amx_int8: every eval, one context or two; upstream
    ggml-org/llama.cpp#20824, closed unfixed, and others hit it on Sapphire Rapids
    runners). Without extra buffer types the same CPU runs the plain AVX-512 path.
    Elsewhere they stay on: the ARM and AVX2 repacking of Q4_0 / Q4_K weights is much
    faster there. ``Llama`` takes no such argument, so its default model parameters are
    wrapped while it loads.
    """
    if enabled:
        yield
        return
    import importlib

    # The module ``Llama`` takes its defaults from (``llama_cpp.llama`` imports it whole).
    bindings: Any = importlib.import_module("llama_cpp.llama_cpp")
    default = bindings.llama_model_default_params

    def without_extra() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    with _PATCHING:
        bindings.llama_model_default_params = without_extra
        try:
            yield
        finally:
            bindings.llama_model_default_params = default


_PATCHING = threading.Lock()


def check_gguf(path: Path) -> None:
    """ModelError unless ``path`` is a readable GGUF file."""
    hint = install_hint("llm")
    if not path.is_file():
        raise ModelError(f"LLM model file not found: {path}; {hint}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != gguf.MAGIC:
        raise ModelError(f"LLM model file is not GGUF (corrupt?): {path}; {hint}")


def strip_trailing_punctuation(text: str) -> str:
    """The words without the sentence mark the ASR put after them."""
    return text.strip().rstrip('.?!,;:-…" ').strip()


def _as_dict(message: ChatMessage) -> dict[str, str]:
    return {"role": message.role, "content": message.content}


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """llama.cpp prints load chatter on fd 2 even with verbose=False."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(devnull)
