"""Errors that reach the user as one clear line and exit status 2."""

from __future__ import annotations

from pathlib import Path


class VoiceboxError(Exception):
    """A problem the user can fix (bad input, missing model, no device).

    The command line prints ``voicebox: <message>`` and exits with status 2.
    """


class BadAudioError(VoiceboxError):
    """An audio file that cannot be read or converted."""


class ModelError(VoiceboxError):
    """A model file that is missing or cannot be loaded."""


class DeviceError(VoiceboxError):
    """An audio device that is missing, unplugged or refuses the format."""


MAX_TEXT_FILE_BYTES = 4 << 20
"""Config, intents, profile and catalogue files are small; anything larger is a mistake."""


def read_text_file(path: Path, what: str, error: type[VoiceboxError]) -> str:
    """The UTF-8 text of a small settings file, or ``error`` naming ``what`` in one line
    (missing, a folder, a pipe or device, unreadable, too large, not UTF-8)."""
    try:
        if not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise error(f"{what} {path}: {'not found' if not path.exists() else kind}")
        if path.stat().st_size > MAX_TEXT_FILE_BYTES:
            raise error(f"{what} {path}: too large for a text settings file")
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise error(f"{what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None
