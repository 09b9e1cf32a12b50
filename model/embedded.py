"""The embedded model: a small Kimi K2-architecture MoE trained by this project, shipped inside
the package so that an agent runs on a real local model with nothing to download.

It is the default model of ``agent-runtime run`` (a config that names no model, or
``"model": {"backend": "embedded"}``). The checkpoint folder (:data:`EMBEDDED_MODEL_DIR`) has the
layout of the released Kimi checkpoints: ``config.json``, ``model.safetensors`` (bf16), its own
``tiktoken.model`` with the Kimi special tokens, ``tokenizer_config.json``, the compact Kimi chat
template, ``generation_config.json``, and beside them the training log and loss curve that
document how it was made. ``python -m agent_runtime.model.train --out DIR`` trains it again.

Importing this module is cheap; torch loads when :func:`load_embedded_model` is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_runtime.errors import UserError

if TYPE_CHECKING:
    from .backend import LocalMoEModel

__all__ = [
    "EMBEDDED_MODEL_DIR",
    "EMBEDDED_MODEL_FILES",
    "EMBEDDED_MODEL_NAME",
    "load_embedded_model",
]

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent / "embedded_model"
"""The shipped checkpoint folder (package data of ``agent_runtime.model``)."""

EMBEDDED_MODEL_NAME = "embedded"
"""The loaded model's ``name`` (what the CLI reports as the model that ran)."""

EMBEDDED_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tiktoken.model",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
)
"""The files loading needs; an install without one of them is broken."""


def load_embedded_model(**options: Any) -> LocalMoEModel:
    """Load the shipped model as a :class:`~agent_runtime.model.LocalMoEModel`.

    ``options`` go to :meth:`LocalMoEModel.from_pretrained` (``threads``, ``dtype``, ``device``,
    ``constrain``, ``prefix_cache_entries`` ...); ``name`` renames the model (default
    ``"embedded"``). Raises :class:`UserError` when the folder or one of its files is missing (a
    broken install) or when the ``model`` extra (torch, tiktoken ...) is not installed.
    """
    if "path" in options:
        raise UserError(
            'the embedded model has no "path"; to run another checkpoint folder use the '
            '"local" backend'
        )
    name = options.pop("name", EMBEDDED_MODEL_NAME)
    missing = [f for f in EMBEDDED_MODEL_FILES if not (EMBEDDED_MODEL_DIR / f).is_file()]
    if missing:
        raise UserError(
            f"the embedded model's folder {EMBEDDED_MODEL_DIR} lacks {', '.join(missing)}: the "
            "installation is incomplete; reinstall agent-runtime, or name another model in the "
            'config ("model": {"backend": "local", "path": DIR})'
        )
    try:
        from .backend import LocalMoEModel
    except ModuleNotFoundError as exc:
        raise UserError(
            f"the embedded model needs the model extra (missing {exc.name!r}): "
            "pip install 'agent-runtime[model]'"
        ) from None
    model = LocalMoEModel.from_pretrained(EMBEDDED_MODEL_DIR, **options)
    model.name = str(name)
    return model
