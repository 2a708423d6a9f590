"""Find the default model files shipped inside PyPI packages, or name how to fetch them.

What the defaults are (package, folder, main file, install command) is written once, in
``catalogue.toml``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from voicebox.errors import ModelError

if TYPE_CHECKING:
    from voicebox.models.catalogue import Catalogue, ModelEntry


def package_dir(module: str) -> Path | None:
    """Folder of an installed package without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _catalogue() -> Catalogue:
    from voicebox.models.catalogue import load_catalogue

    return load_catalogue()


def default_entry(kind: str) -> ModelEntry:
    """The catalogue's packaged default of ``kind`` (asr, llm, tts, vad, turn)."""
    from voicebox.models.catalogue import ModelKind

    return _catalogue().default(ModelKind(kind))


def install_hint(kind: str) -> str:
    """How to get the default model of ``kind``, for error messages."""
    return f"fetch the default with: {default_entry(kind).how_to_get()}"


def packaged_path(kind: str) -> Path:
    """Path of the default model of ``kind`` (what its engine loads); ModelError if missing."""
    from voicebox.models.catalogue import main_path

    entry = default_entry(kind)
    assert entry.package is not None, f"the default {kind} model ships in a package"
    root = package_dir(entry.package.module)
    path = main_path(entry, root / entry.package.folder) if root is not None else None
    if path is None or not path.exists():
        raise ModelError(
            f"{kind} model {entry.name} not found (package {entry.package.module}); "
            f"fetch it with: {entry.how_to_get()}  (or run scripts/setup.sh)"
        )
    return path
