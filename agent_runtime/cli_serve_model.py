"""``agent-runtime serve-model [--path DIR]``: the local MoE served over the OpenAI-compatible
API, for other programs (the ``openai`` clients, another agent-runtime process through its
``"openai"`` backend).

Part of the composition root: the model is loaded here as the config loader loads it (a
checkpoint folder with ``--path``, else the embedded model shipped with the package) and handed
to the server of ``agent_runtime.protocols.openai.server``, which serves any ``ModelBackend``.
Torch and uvicorn load only when the command runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .config import RuntimeConfig, build_model
from .errors import UserError

__all__ = ["add_serve_model_command"]


def add_serve_model_command(commands: Any) -> None:
    """Register ``serve-model`` on the CLI's subcommands (``argparse`` subparsers)."""
    serve = commands.add_parser(
        "serve-model",
        help="serve the local model over the OpenAI-compatible API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--path", help="checkpoint folder (default: the embedded model)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0: any free port")
    serve.add_argument(
        "--served-model-name", help="the model id clients send (default: the model's name)"
    )
    serve.add_argument("--threads", type=int, help="torch threads for the model")
    serve.add_argument("--dtype", help="bfloat16, float32 ... (default: by device)")
    serve.add_argument("--device", help="cpu, cuda ... (default: CUDA when present)")
    serve.add_argument(
        "--max-waiting",
        type=int,
        default=64,
        help="requests that may wait for the model; more are answered 429",
    )
    serve.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require the key in this environment variable as a bearer token",
    )
    serve.set_defaults(handler=_cmd_serve_model)


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.path:
        options = {"backend": "local", "path": str(Path(args.path).resolve())}
    else:
        options = {"backend": "embedded"}
    for name in ("threads", "dtype", "device"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    return options


def _cmd_serve_model(args: argparse.Namespace) -> int:
    from agent_runtime.protocols.openai.server import serve_model

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UserError(f"environment variable {args.api_key_env} (--api-key-env) is not set")
    if args.max_waiting < 0:
        raise UserError("--max-waiting must be >= 0")
    model = build_model(RuntimeConfig.model_validate({"model": _model_options(args)}))

    def listening(url: str) -> None:
        print(f"serving {args.served_model_name or model.name} at {url}", flush=True)

    serve_model(
        model,
        host=args.host,
        port=args.port,
        on_listening=listening,
        model_id=args.served_model_name,
        max_waiting=args.max_waiting,
        api_key=api_key,
    )
    return 0
