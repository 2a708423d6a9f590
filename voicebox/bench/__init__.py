"""The latency bench: scenarios of real recorded speech, scored from simulate output."""
