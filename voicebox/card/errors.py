"""Errors of the card subsystem; each reaches the user as one clear line."""

from __future__ import annotations

from voicebox.errors import VoiceboxError


class CardError(VoiceboxError):
    """The card (real or emulated) failed in a way the driver could not recover from."""


class ProfileError(VoiceboxError):
    """A firmware profile that is missing or does not follow the schema."""


class StandInError(CardError):
    """A functional stand-in model that does not match the card's firmware profile."""


class CardTimeoutError(CardError):
    """The card did not answer before the deadline (it may be hung)."""


class CardProtocolError(CardError):
    """The card sent bytes that break the protocol (bad frame, lost token, wrong reply)."""


class CardRemoteError(CardError):
    """The card answered a command with an ERROR frame."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(f"card error {name} ({code}): {message}")
        self.code = code
        self.name = name
        self.message = message


class CardResetError(CardError):
    """The card reset itself (or was reset): every session it held is gone."""


class CardLinkError(CardError):
    """The device path cannot be opened, or the link to the card closed."""
