"""What of a payload may become a span attribute: nothing unless content capture is on, then a
size-capped JSON rendering with secret-looking fields replaced.

A field is secret when its name says so (``authorization``, ``api_key``, ``token``, ``password``,
``secret``, ``credentials``, ``cookie``, ``private_key`` and their spellings); its value is replaced
by ``"[redacted]"`` whatever it is. Bearer tokens and URL userinfo inside strings are cut too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .settings import current_settings

__all__ = ["REDACTED", "capture", "is_secret_key", "scrub", "scrub_text"]

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(auth|token|api[-_]?key|apikey|secret|passw|pwd|credential|cookie|private[-_]?key|"
    r"session[-_]?id|signature)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_KEYLIKE = re.compile(r"\b(sk|pk|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{12,}")
# ``"password": "x"``, ``api_key=x``, ``Authorization: x`` inside free text (a tool's reply that
# quotes its arguments, an error message): the value after a secret-looking name is cut.
_NAMED_SECRET = re.compile(
    r"""(?ix)
    (["']?[\w-]*(?:auth|token|api[-_]?key|apikey|secret|passw|pwd|credential|cookie|
        private[-_]?key|session[-_]?id|signature)[\w-]*["']?\s*[:=]\s*)
    (?!\[redacted\])("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&}\]]+)
    """
)


def is_secret_key(name: str) -> bool:
    """Whether a field of this name holds a secret (its value is never recorded)."""
    return bool(_SECRET_KEY.search(name))


def scrub_text(text: str) -> str:
    """``text`` with bearer/basic credentials, URL userinfo, API-key-looking words and the values
    of ``name: value`` / ``name=value`` pairs with a secret-looking name replaced."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _NAMED_SECRET.sub(lambda m: f"{m.group(1)}{_quoted_redacted(m.group(2))}", text)
    return _KEYLIKE.sub(REDACTED, text)


def _quoted_redacted(value: str) -> str:
    quote = value[:1] if value[:1] in ("'", '"') else ""
    return f"{quote}{REDACTED}{quote}"


def scrub(value: Any, depth: int = 0) -> Any:
    """A copy of a JSON-like value with secret fields and secret-looking strings replaced."""
    if depth > 32:
        return "…"
    if isinstance(value, dict):
        return {
            str(k): REDACTED if is_secret_key(str(k)) else scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, depth + 1) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def capture(value: Any) -> str | None:
    """The attribute text for ``value`` when content capture is on, else ``None``: scrubbed,
    rendered as JSON (strings as they are) and cut to the configured limit."""
    settings = current_settings()
    if not settings.capture_content:
        return None
    cleaned = scrub(value)
    if isinstance(cleaned, str):
        text = cleaned
    else:
        try:
            text = json.dumps(cleaned, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(cleaned)
    limit = settings.content_limit
    if len(text) > limit:
        return text[:limit] + f"…[{len(text) - limit} more characters]"
    return text
