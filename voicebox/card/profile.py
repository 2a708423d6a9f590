"""Firmware profiles: what one chip firmware is (model, window, timing, power), from TOML."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebox.card.errors import ProfileError
from voicebox.errors import read_text_file

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROFILES_DIR = Path(__file__).resolve().parents[2] / "firmware_profiles"
"""The profiles shipped with voicebox (``firmware_profiles/*.toml`` in the source tree)."""


def _positive(value: float, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0 (got {value!r})")


@dataclass(frozen=True, slots=True)
class StandInSpec:
    """Which GGUF files may stand in for the hardwired model in the emulator."""

    files: tuple[str, ...]
    """Shell patterns (fnmatch, case-insensitive) the GGUF file name must match."""
    architectures: tuple[str, ...]
    """Accepted values of the GGUF ``general.architecture`` key."""
    note: str = ""
    """Why these stand-ins are acceptable, for people reading the profile."""

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("files must list at least one pattern")
        if not self.architectures:
            raise ValueError("architectures must list at least one GGUF architecture")

    def accepts_file(self, file_name: str) -> bool:
        """True if ``file_name`` matches one of the patterns."""
        name = file_name.lower()
        return any(fnmatch.fnmatch(name, p.lower()) for p in self.files)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The model etched into the chip."""

    name: str
    """Model identity as the vendor names it."""
    architecture: str
    """GGUF architecture name of the real model (``llama`` for Llama 3.1)."""
    parameters_b: float
    """Parameter count in billions."""
    tokenizer_family: str
    """Tokenizer the firmware applies (``llama3``, ``chatml``...)."""
    chat_template: str
    """Chat template the firmware renders messages with."""
    stand_in: StandInSpec
    """Functional stand-ins for emulation."""

    def __post_init__(self) -> None:
        for name in ("name", "architecture", "tokenizer_family", "chat_template"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty")
        _positive(self.parameters_b, "parameters_b")


@dataclass(frozen=True, slots=True)
class QuantizationSpec:
    """How the weights are stored in silicon."""

    scheme: str
    """Human description, e.g. ``mixed 3-bit/6-bit``."""
    weight_bits: tuple[int, ...]
    """Bit widths used for weights."""
    kv_cache_bits: int
    """Bit width of the KV cache entries."""

    def __post_init__(self) -> None:
        if not self.weight_bits or any(not 1 <= b <= 32 for b in self.weight_bits):
            raise ValueError(f"weight_bits must be bit widths in 1..32 (got {self.weight_bits})")
        if not 1 <= self.kv_cache_bits <= 32:
            raise ValueError(f"kv_cache_bits must be in 1..32 (got {self.kv_cache_bits})")


@dataclass(frozen=True, slots=True)
class ContextSpec:
    """The context window and the on-chip memory that holds it."""

    context_tokens: int
    """Tokens one session can hold (prompt plus reply)."""
    kv_capacity_tokens: int
    """KV cache the card holds across all sessions, in tokens."""

    def __post_init__(self) -> None:
        _positive(self.context_tokens, "context_tokens")
        if self.kv_capacity_tokens < self.context_tokens:
            raise ValueError(
                f"kv_capacity_tokens ({self.kv_capacity_tokens}) must be >= "
                f"context_tokens ({self.context_tokens})"
            )


@dataclass(frozen=True, slots=True)
class TimingSpec:
    """The card's timing model (see docs/card-protocol.md, "Timing model")."""

    time_to_first_token_ms: float
    """Fixed latency from GENERATE to the first token when the prompt is already prefilled."""
    prefill_tokens_per_s: float
    """Rate at which new prompt tokens are prefilled."""
    decode_tokens_per_s: float
    """Tokens per second per session while generating."""
    reply_ms_max: float
    """Published bound on a whole reply's latency (informational; shown by ``profiles``)."""

    def __post_init__(self) -> None:
        if self.time_to_first_token_ms < 0:
            raise ValueError(
                f"time_to_first_token_ms must be >= 0 (got {self.time_to_first_token_ms})"
            )
        _positive(self.prefill_tokens_per_s, "prefill_tokens_per_s")
        _positive(self.decode_tokens_per_s, "decode_tokens_per_s")
        _positive(self.reply_ms_max, "reply_ms_max")


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """Concurrent users the card serves."""

    max_sessions: int
    """Sessions that may be open at once."""

    def __post_init__(self) -> None:
        _positive(self.max_sessions, "max_sessions")


@dataclass(frozen=True, slots=True)
class PowerSpec:
    """Power draw and thermal behaviour."""

    card_power_w: float
    """Power one card draws while generating."""
    cards_per_model: int
    """Cards one model instance spans (1 unless the model is split across cards)."""
    throttle_rate_factor: float
    """Fraction of the normal rates the card keeps while thermally throttled."""

    def __post_init__(self) -> None:
        _positive(self.card_power_w, "card_power_w")
        _positive(self.cards_per_model, "cards_per_model")
        if not 0 < self.throttle_rate_factor <= 1:
            raise ValueError(
                f"throttle_rate_factor must be in (0, 1] (got {self.throttle_rate_factor})"
            )


@dataclass(frozen=True, slots=True)
class PcieSpec:
    """How the card shows up on the PCIe bus."""

    vendor_id: int
    """PCI vendor id (16 bits)."""
    device_id: int
    """PCI device id (16 bits)."""

    def __post_init__(self) -> None:
        for name in ("vendor_id", "device_id"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} must be a 16-bit id (got {value:#x})")


@dataclass(frozen=True, slots=True)
class ChipSpec:
    """Physical facts, for the record (the emulator does not use them)."""

    die_area_mm2: float
    """Die area."""
    process_nm: float
    """Process node."""
    server_cards: int
    """Cards in the reference server."""
    server_power_w: float
    """Power of the reference server."""


@dataclass(frozen=True, slots=True)
class FirmwareProfile:
    """One chip firmware: the model it hardwires and how the card behaves."""

    schema_version: int
    """Version of this schema (1)."""
    name: str
    """Profile name; must equal the file name without ``.toml``."""
    title: str
    """One-line human title."""
    firmware_version: str
    """Firmware version string the card reports on IDENTIFY."""
    projection: bool
    """True if this card does not exist yet and every number is projected."""
    description: str
    """Where the numbers come from."""
    assumed: tuple[str, ...]
    """Dotted field names whose values are assumptions, not published facts."""
    projected_from: tuple[str, ...]
    """Published facts a projection extrapolates from (required when ``projection``)."""
    model: ModelSpec
    quantization: QuantizationSpec
    context: ContextSpec
    timing: TimingSpec
    sessions: SessionSpec
    power: PowerSpec
    pcie: PcieSpec
    chip: ChipSpec

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version must be {SCHEMA_VERSION} (got {self.schema_version})")
        if self.projection and not self.projected_from:
            raise ValueError("projected_from must list the facts a projection is based on")
        if not self.projection and self.projected_from:
            raise ValueError("projected_from is only for profiles with projection = true")
        for dotted in self.assumed:
            if not _has_field(self, dotted):
                raise ValueError(f"assumed names unknown field {dotted!r}")
        sessions_kv = self.sessions.max_sessions * self.context.context_tokens
        if sessions_kv > self.context.kv_capacity_tokens:
            raise ValueError(
                f"sessions.max_sessions * context.context_tokens ({sessions_kv}) exceeds "
                f"context.kv_capacity_tokens ({self.context.kv_capacity_tokens}): every session "
                "holds a whole context window in on-chip memory"
            )


def _has_field(obj: object, dotted: str) -> bool:
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(obj) or part not in {
            f.name for f in dataclasses.fields(obj)
        }:
            return False
        obj = getattr(obj, part)
    return True


def load_profile(path: Path) -> FirmwareProfile:
    """Read and validate one profile; ProfileError names the file and the field."""
    text = read_text_file(path, "firmware profile", ProfileError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from exc
    profile = _build(FirmwareProfile, data, str(path), "")
    assert isinstance(profile, FirmwareProfile)
    if profile.name != path.stem:
        raise ProfileError(
            f"{path}: name must equal the file name {path.stem!r} (got {profile.name!r})"
        )
    return profile


def profile_paths(directory: Path = PROFILES_DIR) -> list[Path]:
    """Profile files in ``directory``, sorted by name."""
    return sorted(directory.glob("*.toml"))


def find_profile(name: str, directory: Path = PROFILES_DIR) -> FirmwareProfile:
    """The profile called ``name`` (or at path ``name``); ProfileError listing the choices."""
    as_path = Path(name)
    if as_path.suffix == ".toml" and as_path.exists():
        return load_profile(as_path)
    path = directory / f"{name}.toml"
    if not path.exists():
        known = ", ".join(p.stem for p in profile_paths(directory)) or "none"
        raise ProfileError(f"no firmware profile {name!r} in {directory} (known: {known})")
    return load_profile(path)


def _build(cls: type[Any], table: object, file: str, prefix: str) -> Any:
    """Dataclass ``cls`` from a TOML table, checking keys and types; errors name the field."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(table, dict):
        raise ProfileError(f"{file}: {where} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ProfileError(f"{file}: unknown field {prefix}{unknown[0]}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        key = f"{prefix}{name}"
        if name not in table:
            if field.default is dataclasses.MISSING:
                raise ProfileError(f"{file}: missing field {key}")
            continue
        values[name] = _convert(hints[name], table[name], file, key)
    try:
        return cls(**values)
    except ValueError as exc:
        raise ProfileError(f"{file}: {prefix}{exc}") from exc


def _convert(hint: Any, value: object, file: str, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value, file, f"{key}.")
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, list):
            raise ProfileError(f"{file}: {key} must be an array of {item.__name__}")
        return tuple(_convert(item, v, file, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, types.UnionType):
        raise TypeError(f"unsupported field type {hint}")
    ok = (
        isinstance(value, bool)
        if hint is bool
        else isinstance(value, int) and not isinstance(value, bool)
        if hint is int
        else isinstance(value, int | float) and not isinstance(value, bool)
        if hint is float
        else isinstance(value, hint)
    )
    if not ok:
        raise ProfileError(f"{file}: {key} must be {hint.__name__} (got {value!r})")
    if hint is float and not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise ProfileError(f"{file}: {key} must be a finite number (got {value!r})")
    return float(value) if hint is float else value  # type: ignore[arg-type]
