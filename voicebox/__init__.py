"""voicebox: an embedded real-time voice assistant runtime."""

__version__ = "0.1.0"
