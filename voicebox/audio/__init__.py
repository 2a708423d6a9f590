"""Audio in and out: WAV files, the sound card, the virtual device, resampling."""
