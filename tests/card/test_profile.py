"""Firmware profiles: the shipped ones load; bad ones fail naming the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voicebox.card.errors import ProfileError
from voicebox.card.profile import PROFILES_DIR, find_profile, load_profile, profile_paths
from voicebox.card.timing import CardTiming, project_v2v_ms

HC1_FILE = PROFILES_DIR / "hc1-llama3.1-8b.toml"


def test_shipped_profiles_load() -> None:
    profiles = [load_profile(p) for p in profile_paths()]
    assert len(profiles) >= 2
    assert any(p.projection for p in profiles)
    for p in profiles:
        if p.projection:
            assert p.projected_from and "PROJECTION" in p.title


def test_hc1_carries_the_public_facts() -> None:
    p = find_profile("hc1-llama3.1-8b")
    assert not p.projection
    assert p.model.name == "Llama-3.1-8B-Instruct" and p.model.parameters_b == 8.0
    assert p.quantization.weight_bits == (3, 6)
    assert p.context.context_tokens == 1024
    assert 15_000 <= p.timing.decode_tokens_per_s <= 17_000
    assert p.timing.reply_ms_max == 200.0
    assert 200 <= p.power.card_power_w <= 250
    assert p.chip.die_area_mm2 == 880.0 and p.chip.process_nm == 6.0
    assert p.chip.server_cards == 10 and p.chip.server_power_w == 2500.0
    # Published facts are never listed as assumptions.
    assert "timing.decode_tokens_per_s" not in p.assumed


def _write_variant(tmp_path: Path, old: str, new: str, name: str = "hc1-llama3.1-8b") -> Path:
    text = HC1_FILE.read_text()
    assert old in text, old
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "field", "why"),
    [
        (
            "decode_tokens_per_s = 16000.0",
            "decode_tokens_per_s = -1.0",
            "timing.decode_tokens_per_s",
            "> 0",
        ),
        (
            "decode_tokens_per_s = 16000.0",
            'decode_tokens_per_s = "fast"',
            "timing.decode_tokens_per_s",
            "must be float",
        ),
        ("decode_tokens_per_s = 16000.0", "decode_tokens_per_s = inf",
         "timing.decode_tokens_per_s", "finite"),
        ("context_tokens = 1024", "context_tokens = 1024.5", "context.context_tokens", "int"),
        ("max_sessions = 16", "max_sessions = 17", "sessions.max_sessions", "exceeds"),
        (
            "kv_capacity_tokens = 16384",
            "kv_capacity_tokens = 512",
            "kv_capacity_tokens",
            ">= context_tokens",
        ),
        ("card_power_w = 225.0\n", "", "power.card_power_w", "missing"),
        ("cards_per_model = 1", "cards_per_model = 1\nwatts = 3", "power.watts", "unknown"),
        (
            "throttle_rate_factor = 0.5",
            "throttle_rate_factor = 1.5",
            "power.throttle_rate_factor",
            "(0, 1]",
        ),
        ("vendor_id = 0x1e00", "vendor_id = 0x1e0000", "pcie.vendor_id", "16-bit"),
        ('architectures = ["llama"]', "architectures = []", "model.stand_in.architectures", ""),
        ('"pcie.device_id",', '"pcie.serial",', "pcie.serial", "unknown field"),
        ("projection = false", "projection = true", "projected_from", "must list"),
        ("schema_version = 1", "schema_version = 2", "schema_version", "must be 1"),
        ("weight_bits = [3, 6]", 'weight_bits = [3, "6"]', "quantization.weight_bits[1]", "int"),
    ],
)
def test_bad_profile_names_file_and_field(
    tmp_path: Path, old: str, new: str, field: str, why: str
) -> None:
    path = _write_variant(tmp_path, old, new)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert str(path) in message
    assert field in message
    assert why in message


def test_name_must_match_file(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, 'name = "hc1-llama3.1-8b"', 'name = "other"', name="mine")
    with pytest.raises(ProfileError, match="name must equal the file name 'mine'"):
        load_profile(path)


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed\n")
    with pytest.raises(ProfileError, match=re.escape(str(path)) + ": not valid TOML"):
        load_profile(path)


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError, match="known: .*hc1-llama3.1-8b"):
        find_profile("hc9")


def test_timing_model_and_projection_arithmetic() -> None:
    p = find_profile("hc1-llama3.1-8b")
    t = CardTiming(p)
    ttft, prefill, decode = (
        p.timing.time_to_first_token_ms,
        p.timing.prefill_tokens_per_s,
        p.timing.decode_tokens_per_s,
    )
    assert t.token_ms(100, 0) == pytest.approx(ttft + 1000 * 100 / prefill)
    assert t.reply_ms(100, 11) == pytest.approx(ttft + 1000 * 100 / prefill + 1000 * 10 / decode)
    assert t.energy_mj(10.0) == pytest.approx(p.power.card_power_w * 10.0)
    slow = CardTiming(p, throttled=True)
    rates_part = t.reply_ms(100, 11) - ttft  # the fixed latency is not throttled
    expected = ttft + rates_part / p.power.throttle_rate_factor
    assert slow.reply_ms(100, 11) == pytest.approx(expected)
    host = {"vad_end_ms": 300.0, "asr_final_ms": 120.0, "llm_first_clause_ms": 999.0, "tts_ms": 80}
    v2v = project_v2v_ms(p, host)
    assert v2v == pytest.approx(500.0 + t.token_ms(40, 11))  # the llm stage is replaced
