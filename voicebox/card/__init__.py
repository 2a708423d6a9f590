"""The hardwired-model card: firmware profiles, host-card protocol, driver and emulator."""
