"""Errors that reach the user as one clear line and exit status 2."""


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
