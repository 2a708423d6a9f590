"""A Piper voice cut in two ONNX graphs, so a clause's speech can be decoded a piece at a time.

Piper's graph (VITS) runs the text encoder, the duration predictor and the flow over the
whole clause, then the HiFi-GAN decoder turns the latent frames into audio, 256 samples a
frame. The decoder is convolutional, with a reach of a few frames, so a span of frames
decoded with some frames of context on each side gives the samples the whole clause would
(``PiperTtsEngine.synthesize_chunks``). The decoder is about half of a short clause's
synthesis (joe-medium, "I'm sorry, but": 38 of 67 ms), so the first audio comes sooner.

The cut is made once per voice file with the ``onnx`` package, in a child process (onnx
holds the whole graph in memory while it cuts, ~200 MB for a medium voice, which the
runtime should not keep as its peak), and cached beside the requantized LLM weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from voicebox.engines.requantize import cache_dir

_LOGGER = logging.getLogger(__name__)

DECODER_START = "/dec/conv_pre/Conv"
"""The decoder's first node in graphs exported by Piper's ``export_onnx``."""

GRAPH_INPUTS = ("input", "input_lengths", "scales")
"""A single-speaker Piper voice's inputs (a multi-speaker one also takes ``sid``)."""

SPLIT_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class SplitVoice:
    """The two halves of a voice: phoneme ids to latent frames, and frames to audio."""

    encoder: Path
    decoder: Path


def split_paths(model: Path) -> SplitVoice:
    """Where the halves of ``model`` are cached: keyed by its resolved path, size and
    modification time, so a replaced voice file is cut again."""
    stat = model.stat()
    key = f"{model.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    folder = cache_dir() / "piper-split" / hashlib.sha256(key.encode()).hexdigest()[:16]
    return SplitVoice(folder / f"{model.stem}.encoder.onnx", folder / f"{model.stem}.decoder.onnx")


def cached_split(model: Path) -> SplitVoice | None:
    """The halves of ``model``, cut now if they are not cached; None when the voice cannot
    be cut (not Piper's graph, a multi-speaker decoder, no ``onnx`` package, a read-only
    cache): the engine then synthesizes whole clauses. The reason is logged."""
    try:
        paths = split_paths(model)
    except OSError as exc:
        _LOGGER.warning("cannot split TTS voice %s: %s", model, exc)
        return None
    if paths.encoder.is_file() and paths.decoder.is_file():
        return paths
    command = [sys.executable, "-m", __name__, str(model), str(paths.encoder), str(paths.decoder)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SPLIT_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _LOGGER.warning("cannot split TTS voice %s: %s; whole clauses", model, exc)
        return None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        _LOGGER.warning("cannot split TTS voice %s: %s; whole clauses", model, reason)
        return None
    _LOGGER.info("split TTS voice %s for chunked synthesis: %s", model.name, paths.encoder.parent)
    return paths


def split(model: Path, encoder: Path, decoder: Path) -> None:
    """Cut ``model`` before its decoder into ``encoder`` and ``decoder`` (written whole or
    not at all). Raises ValueError for a graph that is not a single-speaker Piper voice."""
    import onnx
    from onnx.utils import Extractor

    graph_model = onnx.load(str(model))
    graph = graph_model.graph
    start = next((n for n in graph.node if n.name == DECODER_START), None)
    if start is None:
        raise ValueError(f"no {DECODER_START} node: not a Piper VITS voice")
    names = {i.name for i in graph.input}
    if names != set(GRAPH_INPUTS):
        raise ValueError(f"inputs {sorted(names)}: only single-speaker voices are split")
    latent = start.input[0]
    decoder_nodes = [n for n in graph.node if n.name.startswith("/dec/")]
    made = {out for n in decoder_nodes for out in n.output}
    weights = {w.name for w in graph.initializer}
    outside = {i for n in decoder_nodes for i in n.input if i and i not in made | weights}
    if outside != {latent}:
        raise ValueError(f"the decoder reads {sorted(outside)}, not the latent frames alone")
    outputs = [o.name for o in graph.output]
    if len(outputs) != 1:
        raise ValueError(f"outputs {outputs}: expected the audio alone")
    extractor = Extractor(graph_model)
    halves = ((extractor.extract_model(list(GRAPH_INPUTS), [latent]), encoder),
              (extractor.extract_model([latent], outputs), decoder))
    encoder.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for half, path in halves:
            part = path.with_name(f"{path.name}.{os.getpid()}.part")
            written.append(part)
            onnx.save(half, str(part))
        for (_, path), part in zip(halves, written, strict=True):
            part.replace(path)
    finally:
        for part in written:
            part.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m voicebox.engines.piper_split MODEL ENCODER DECODER``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m voicebox.engines.piper_split MODEL ENCODER DECODER",
              file=sys.stderr)
        return 2
    try:
        split(*(Path(a) for a in args))
    except ImportError:
        print("the onnx package is not installed", file=sys.stderr)
        return 1
    except Exception as exc:  # a child process: one line on stderr for the parent's log
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
