"""The card's timing and energy model, and the voice-to-voice projection built on it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from voicebox.card.profile import FirmwareProfile

_LOGGER = logging.getLogger(__name__)

TURN_PROMPT_TOKENS = 40
"""New prompt tokens one spoken turn adds (the user's words and the template around them)."""
FIRST_CLAUSE_TOKENS = 12
"""Tokens until the first clause the TTS can speak."""


@dataclass(frozen=True, slots=True)
class CardTiming:
    """When the card emits each token of a reply, in card time (ms since GENERATE).

    first token: ``time_to_first_token_ms + new_prompt_tokens / prefill_rate``;
    token ``i`` (0-based): first token ``+ i / decode_rate``. Thermal throttling
    scales both rates by ``power.throttle_rate_factor``.
    """

    profile: FirmwareProfile
    throttled: bool = False
    """Whether the card runs at its throttled rates."""

    @property
    def rate_factor(self) -> float:
        return self.profile.power.throttle_rate_factor if self.throttled else 1.0

    def prefill_ms(self, new_prompt_tokens: int) -> float:
        """Time to prefill prompt tokens that are not cached yet."""
        rate = self.profile.timing.prefill_tokens_per_s * self.rate_factor
        return 1000.0 * new_prompt_tokens / rate

    def token_ms(self, new_prompt_tokens: int, index: int) -> float:
        """Card time at which token ``index`` of the reply is out."""
        rate = self.profile.timing.decode_tokens_per_s * self.rate_factor
        first = self.profile.timing.time_to_first_token_ms + self.prefill_ms(new_prompt_tokens)
        return first + 1000.0 * index / rate

    def reply_ms(self, new_prompt_tokens: int, tokens: int) -> float:
        """Card time of a whole reply of ``tokens`` tokens (the first token's time if none)."""
        return self.token_ms(new_prompt_tokens, max(0, tokens - 1))

    def energy_mj(self, card_ms: float) -> float:
        """Energy the card(s) spend in ``card_ms`` at full power (W x ms = mJ).

        The whole card's power is charged to the reply: an upper bound when other
        sessions share the card at the same time.
        """
        return self.profile.power.card_power_w * self.profile.power.cards_per_model * card_ms


def project_v2v_ms(
    profile: FirmwareProfile,
    host_stages_ms: Mapping[str, float],
    *,
    prompt_tokens: int = TURN_PROMPT_TOKENS,
    first_clause_tokens: int = FIRST_CLAUSE_TOKENS,
) -> float:
    """Projected voice-to-voice latency with the real card, in ms.

    ``host_stages_ms`` are the measured host stages of one turn on the critical path
    (end-of-speech detection, final ASR, TTS of the first clause, output buffering...).
    Keys starting with ``llm`` are ignored: the card's timing model replaces the LLM
    stage with the card time to the end of the first clause, i.e. TTFT plus prefill of
    the turn's new ``prompt_tokens`` plus ``first_clause_tokens`` decoded tokens.
    """
    host = sum(v for k, v in host_stages_ms.items() if not k.lower().startswith("llm"))
    card = CardTiming(profile).token_ms(prompt_tokens, max(0, first_clause_tokens - 1))
    return host + card
