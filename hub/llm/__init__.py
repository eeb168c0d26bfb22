"""Assistant providers chosen by ``HUB_LLM``; SDKs are imported only when chosen."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hub.llm.base import LLM, Finish, LLMError, LLMRequest, Turn

if TYPE_CHECKING:
    from hub.settings import Settings

__all__ = ["LLM", "Finish", "LLMError", "LLMRequest", "Turn", "create_llm"]

log = logging.getLogger(__name__)


def create_llm(settings: Settings) -> LLM:
    """Build the provider the settings name; say in the log which one answers."""
    name = settings.llm_name
    if name == "anthropic":
        from hub.llm.anthropic import AnthropicLLM

        log.info("assistant: Claude (%s) through the anthropic SDK", settings.anthropic_model)
        return AnthropicLLM.from_settings(settings)
    if name == "openai":
        from hub.llm.openai import OpenAILLM

        log.info("assistant: OpenAI-compatible API at %s", settings.openai_base_url)
        return OpenAILLM.from_settings(settings)
    from hub.llm.echo import EchoLLM

    log.info(
        "assistant: offline echo (no ANTHROPIC_API_KEY set; set it, or HUB_LLM, for a real model)"
    )
    return EchoLLM(delay=settings.echo_delay)
