"""OpenAI-compatible chat completions backend (vLLM, SGLang, Moonshot API, Ollama).

``OpenAIChatModel(base_url, model, ...)`` is a ``ModelBackend``; importing this package loads
httpx, so ``import agent_runtime`` does not import it: it loads only where it is used.
"""

from __future__ import annotations

from .chat import OpenAIChatModel
from .errors import ModelHTTPError
from .request import TOOL_ERROR_PREFIX, chat_request_body

__all__ = ["TOOL_ERROR_PREFIX", "ModelHTTPError", "OpenAIChatModel", "chat_request_body"]
