"""A check that an ONNX model is the kind its engine runs, by the inputs it takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voicebox.errors import ModelError


def require_inputs(session: Any, names: set[str], what: str, path: Path) -> None:
    """ModelError unless ``session`` (onnxruntime) takes inputs ``names``: another model
    loads fine and fails only at its first call, in the middle of a conversation."""
    found = {i.name for i in session.get_inputs()}
    if not names <= found:
        raise ModelError(
            f"{path} is not a {what} (it takes inputs {', '.join(sorted(found)) or 'none'}, "
            f"a {what} takes {', '.join(sorted(names))})"
        )
