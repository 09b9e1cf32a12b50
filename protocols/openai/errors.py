"""The error an OpenAI-compatible server's HTTP failure raises."""

from __future__ import annotations

from agent_runtime.errors import ModelBackendError


class ModelHTTPError(ModelBackendError):
    """The server answered with an HTTP error status.

    A ``ModelBackendError`` like every other backend failure; ``status_code`` and ``detail``
    (the server's error message, or an excerpt of its body) are kept for callers that react to
    them, e.g. to tell a context-length overflow (400) from an overloaded server (503).
    """

    def __init__(self, url: str, status_code: int, detail: str) -> None:
        super().__init__(f"{url}: HTTP {status_code}: {detail}")
        self.url = url
        self.status_code = status_code
        self.detail = detail
