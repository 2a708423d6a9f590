"""Join a model split over PyPI packages (``model.bin.part1``, ``.part2``...) into models/NAME/."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from voicebox.errors import ModelError
from voicebox.models.catalogue import ModelEntry, verify_model
from voicebox.models.download import ProgressFn, recorded_sha256, sidecar_path
from voicebox.models.locate import package_dir

_LOGGER = logging.getLogger(__name__)

_COPY_CHUNK_BYTES = 1 << 20
_PART = re.compile(r"\.part(\d+)$")


def assemble(
    entry: ModelEntry,
    models_dir: Path,
    *,
    progress: Callable[[str], ProgressFn] | None = None,
    find_package: Callable[[str], Path | None] = package_dir,
) -> Path:
    """Build ``models_dir/entry.name/`` from the installed packages of ``entry.assemble``.

    Each file is copied whole when one package holds it, or concatenated from its
    ``.partN`` pieces in order; its size and SHA-256 are checked against the catalogue
    before an atomic rename. Files already in place with a matching recorded SHA-256 are
    kept. ``progress(file_name)`` returns a progress callback for that file. Returns what
    an engine loads; ModelError if a package is missing or a piece is wrong.
    """
    source = entry.assemble
    if source is None:
        raise ModelError(f"model {entry.name} is not assembled from packages")
    folders: list[Path] = []
    for module in source.modules:
        root = find_package(module)
        if root is None:
            raise ModelError(
                f"model {entry.name} needs package {module}, which is not installed; "
                f"install with: {source.install}"
            )
        folders.append(root / source.folder)
    target = models_dir / entry.name
    target.mkdir(parents=True, exist_ok=True)
    for spec in entry.files:
        dest = target / spec.path
        if dest.is_file() and spec.sha256 is not None and recorded_sha256(dest) == spec.sha256:
            _LOGGER.info("%s is already assembled", dest)
            continue
        pieces = _pieces(spec.path, folders)
        if not pieces:
            raise ModelError(
                f"model {entry.name}: no {spec.path} or {spec.path}.partN in packages "
                f"{', '.join(source.modules)}; reinstall with: {source.install}"
            )
        total = sum(p.stat().st_size for p in pieces)
        if spec.size_bytes is not None and total != spec.size_bytes:
            raise ModelError(
                f"model {entry.name}: pieces of {spec.path} add up to {total} bytes, expected "
                f"{spec.size_bytes}; reinstall with: {source.install}"
            )
        _join(pieces, dest, spec.sha256, total, progress(spec.path) if progress else None)
    return verify_model(entry, target)


def _pieces(name: str, folders: list[Path]) -> list[Path]:
    """The file itself from the first package that has it, else its parts in order."""
    for folder in folders:
        if (folder / name).is_file():
            return [folder / name]
    parts: dict[int, Path] = {}
    for folder in folders:
        for path in folder.glob(f"{name}.part*"):
            match = _PART.search(path.name)
            if match is not None and path.name == f"{name}{match.group(0)}":
                parts[int(match.group(1))] = path
    numbers = sorted(parts)
    if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise ModelError(f"pieces of {name} are not contiguous: part numbers {numbers}")
    return [parts[n] for n in numbers]


def _join(
    pieces: list[Path], dest: Path, sha256: str | None, total: int, progress: ProgressFn | None
) -> None:
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    done = 0
    with part.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as src:
                while chunk := src.read(_COPY_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    hexdigest = digest.hexdigest()
    if sha256 is not None and hexdigest != sha256:
        part.unlink()
        raise ModelError(
            f"checksum mismatch assembling {dest.name}: expected sha256 {sha256}, got {hexdigest}"
        )
    os.replace(part, dest)
    sidecar_path(dest).write_text(f"{hexdigest}  {dest.name}\n", encoding="ascii")
