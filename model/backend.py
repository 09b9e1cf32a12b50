"""``LocalMoEModel``: the local MoE as a ``ModelBackend`` the agent loop drives.

One assistant turn goes: render the conversation in the checkpoint's chat format (tokens, with
the text of users and tools never turned into control tokens), take the cached latent prefix the
conversation shares with an earlier step, prefill the rest, then decode in a worker thread with
the tool grammar masking every step and forced runs appended in one forward. Tokens are parsed
as they come into text deltas and tool-call deltas, which cross to the event loop one by one.
With tracing on, each turn is a ``moe generate`` span (a child of the model call's span):
prompt, reused and generated tokens, prefill and decode times and speeds; its children
``moe prefill`` and ``moe decode`` cover the two phases with their own times, tokens and speeds
(recorded when the turn ends, from the times it noted).
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import torch

from agent_runtime.backend import (
    ModelBackend,
    ModelEvent,
    ModelFinish,
    ModelSettings,
    ReasoningDelta,
    TextDelta,
)
from agent_runtime.errors import UserError
from agent_runtime.telemetry.spans import (
    NO_SPAN,
    AttributeValue,
    SpanScope,
    error_type_of,
    span,
    tracing_enabled,
)
from agent_runtime.types import AssistantMessage, Message, ToolSpec, Usage

from .chat_format import ChatFormat, load_chat_format
from .constrained import tool_grammar
from .generation import SamplingParams, decode
from .prefix_cache import PrefixCache
from .transformer import MoEForCausalLM

__all__ = ["GenerationDefaults", "LocalMoEModel", "TurnStats"]

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampling defaults of a checkpoint (its ``generation_config.json``), used where the
    request's ``ModelSettings`` leave a value unset."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str]) -> GenerationDefaults:
        """Read ``generation_config.json`` when the folder has one (``do_sample: false`` means
        greedy whatever temperature it names)."""
        file = Path(path) / "generation_config.json"
        if not file.is_file():
            return cls()
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {file}: {exc}") from exc
        if not isinstance(raw, dict):
            raise UserError(f"{file} must hold a JSON object")
        eos = raw.get("eos_token_id")
        eos_ids = (eos,) if isinstance(eos, int) else tuple(int(e) for e in eos or ())
        temperature = float(raw.get("temperature", 0.0) or 0.0)
        if raw.get("do_sample") is False:
            temperature = 0.0
        return cls(
            max_new_tokens=int(raw.get("max_new_tokens") or cls.max_new_tokens),
            temperature=temperature,
            top_p=float(raw.get("top_p", 1.0) or 1.0),
            top_k=int(raw.get("top_k", 0) or 0),
            eos_token_ids=eos_ids,
        )


class _StopText:
    """Cuts generated text at the first stop string, holding back a tail that could still
    become one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if not self.stops or self.hit:
            return "" if self.hit else text
        self._pending += text
        cut = min((i for i in (self._pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            out, self._pending = self._pending[:cut], ""
            return out
        if self._hold <= 0:
            out, self._pending = self._pending, ""
            return out
        out, self._pending = self._pending[: -self._hold], self._pending[-self._hold :]
        return out

    def flush(self) -> str:
        out, self._pending = ("" if self.hit else self._pending), ""
        return out


@dataclass
class TurnStats:
    """Facts of one generated turn: prompt and reused tokens, output and forced tokens."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    forced_tokens: int = 0
    finish_reason: str = "stop"
    tokens: list[int] = field(default_factory=list)


@dataclass
class _Timing:
    """When a turn's decoding started and its first tokens came (the end of prefill), for the
    turn's spans: prefill and decode durations and speeds, and the phases' own spans."""

    started: float
    started_ns: int = field(default_factory=time.time_ns)
    first_at: float | None = None
    first_tokens: int = 0

    def first(self, tokens: int) -> None:
        self.first_at = time.perf_counter()
        self.first_tokens = tokens

    def _ns(self, at: float) -> int:
        """``perf_counter`` time ``at`` on the spans' clock (``time.time_ns``)."""
        return self.started_ns + round((at - self.started) * 1e9)

    def record(self, scope: SpanScope, turn: TurnStats, error_type: str | None = None) -> None:
        """Put the turn's attributes on its span, and record its ``moe prefill`` and
        ``moe decode`` children (the phases that began; ``error_type``: what stopped the turn,
        marked on the phase it stopped)."""
        now = time.perf_counter()
        prefill_tokens = turn.prompt_tokens - turn.cached_tokens
        prefill: dict[str, AttributeValue | None] = {
            "agent_runtime.moe.prefill_tokens": prefill_tokens,
            "agent_runtime.moe.prefix_cache_hit_tokens": turn.cached_tokens,
        }
        scope.set_many(
            {
                **prefill,
                "gen_ai.usage.input_tokens": turn.prompt_tokens,
                "gen_ai.usage.output_tokens": turn.output_tokens,
                "gen_ai.response.finish_reasons": [turn.finish_reason],
                "agent_runtime.moe.generated_tokens": turn.output_tokens,
                "agent_runtime.moe.forced_tokens": turn.forced_tokens,
            }
        )
        if self.first_at is None:
            if error_type is not None:  # stopped during the prefill
                scope.record_child(
                    "moe prefill",
                    start_ns=self._ns(self.started),
                    end_ns=self._ns(now),
                    attributes=prefill,
                    error_type=error_type,
                )
            return
        prefill_s = self.first_at - self.started
        decode_s = now - self.first_at
        decoded = turn.output_tokens - self.first_tokens
        prefill["agent_runtime.moe.prefill_tokens_per_s"] = (
            prefill_tokens / prefill_s if prefill_s > 0 else None
        )
        decode: dict[str, AttributeValue | None] = {
            "agent_runtime.moe.decode_tokens": decoded,
            "agent_runtime.moe.decode_tokens_per_s": (
                decoded / decode_s if decode_s > 0 and decoded > 0 else None
            ),
        }
        scope.set_many(
            {
                **prefill,
                **decode,
                "agent_runtime.moe.prefill_s": prefill_s,
                "agent_runtime.moe.decode_s": decode_s,
                "gen_ai.response.time_to_first_chunk": prefill_s,
            }
        )
        boundary = self._ns(self.first_at)
        scope.record_child(
            "moe prefill", start_ns=self._ns(self.started), end_ns=boundary, attributes=prefill
        )
        scope.record_child(
            "moe decode",
            start_ns=boundary,
            end_ns=self._ns(now),
            attributes=decode,
            error_type=error_type,
        )


class LocalMoEModel(ModelBackend):
    """A DeepSeek-V3 / Kimi K2 checkpoint run in this process.

    ``LocalMoEModel.from_pretrained(DIR)`` loads the weights (FP8 included), the tokenizer, the
    chat format and the generation defaults from a checkpoint folder. Generation runs in a
    worker thread, one turn at a time per model; a cancelled request stops it within one decode
    step. ``prefix_cache_entries`` conversations keep their latent cache between steps.

    Tool calls are grammar-constrained (``constrain``): a call names an offered tool and its
    arguments fit the tool's schema; ``tool_choice`` ``required`` or a tool's name makes the
    turn start with the call. ``jump_forward`` appends the tokens the grammar forces in one
    forward pass.
    """

    provider_name = "local_moe"

    def __init__(
        self,
        model: MoEForCausalLM,
        chat_format: ChatFormat,
        *,
        defaults: GenerationDefaults | None = None,
        name: str = "local",
        prefix_cache_entries: int = 4,
        jump_forward: bool = True,
        constrain: bool = True,
        reasoning: bool = False,
    ) -> None:
        self.model = model
        self.format = chat_format
        self.tokenizer = chat_format.tokenizer
        self.defaults = defaults or GenerationDefaults()
        self.name = name
        self.prefix_cache = PrefixCache(prefix_cache_entries)
        self.jump_forward = jump_forward
        self.constrain = constrain
        self.reasoning = reasoning
        """Whether a turn may open with the format's thinking block (``<think>``): on for
        reasoning checkpoints (Kimi K2 Thinking), off for instruct ones, which the grammar then
        keeps from wandering into a block that never ends the turn."""
        self._lock = threading.Lock()
        self.last_turn: TurnStats | None = None
        """Facts of the last finished turn (benchmarks and tests read them)."""
        stops = set(chat_format.stop_token_ids) | set(self.defaults.eos_token_ids)
        self.stop_token_ids: tuple[int, ...] = tuple(sorted(stops))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: str | torch.dtype | None = None,
        threads: int | None = None,
        device: str | torch.device | None = None,
        chat_format: str | None = None,
        progress: bool = False,
        **options: Any,
    ) -> LocalMoEModel:
        """Load a checkpoint folder: ``config.json``, safetensors (bf16/fp32 or FP8 blocks),
        tokenizer files, chat template and ``generation_config.json``.

        ``device`` defaults to CUDA when present, else the CPU; ``dtype`` to bfloat16 on CUDA and
        float32 on the CPU. ``threads`` sets torch's intra-op threads for the process.
        ``chat_format`` forces ``kimi_k2``, ``deepseek_v3`` or ``deepseek_v3.1`` instead of the
        one the folder implies. Other options go to the constructor.
        """
        from .checkpoint import load_checkpoint
        from .tokenizer import load_tokenizer

        root = Path(path)
        if not root.is_dir():
            raise UserError(f"model folder {root} does not exist")
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = _dtype(dtype, target)
        if threads is not None:
            if threads < 1:
                raise UserError(f"threads must be >= 1, not {threads}")
            torch.set_num_threads(threads)
        model = load_checkpoint(root, dtype=torch_dtype, device=target, progress=progress)
        tokenizer = load_tokenizer(root)
        if tokenizer.vocab_size > model.config.vocab_size:
            raise UserError(
                f"{root}: the tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary "
                f"is {model.config.vocab_size}"
            )
        raw_config = json.loads((root / "config.json").read_text(encoding="utf-8"))
        fmt = load_chat_format(root, tokenizer, config=raw_config, explicit=chat_format)
        defaults = GenerationDefaults.from_folder(root)
        return cls(model, fmt, defaults=defaults, name=f"local:{root.name}", **options)

    # ------------------------------------------------------------------ ModelBackend
    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ModelSettings,
    ) -> AsyncIterator[ModelEvent]:
        send, receive = anyio.create_memory_object_stream[ModelEvent | BaseException](math.inf)
        cancelled = threading.Event()
        token = anyio.lowlevel.current_token()

        def post(item: ModelEvent | BaseException) -> bool:
            """Hand one item to the event loop; False once nobody listens any more."""
            try:
                anyio.from_thread.run_sync(send.send_nowait, item, token=token)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, RuntimeError):
                return False
            return True

        def work() -> None:
            events = self._turn_events(messages, tools, settings, cancelled)
            try:
                for event in events:
                    if not post(event):
                        break
            except BaseException as exc:  # re-raised in the caller's task
                post(exc)
            finally:
                events.close()  # releases the model and stores the cache for the next step
                try:
                    anyio.from_thread.run_sync(send.close, token=token)
                except RuntimeError:  # the event loop is gone (interpreter shutdown)
                    pass

        # The worker runs in a copy of the caller's context: its span is the model call's child.
        caller = contextvars.copy_context()
        worker = threading.Thread(
            target=caller.run, args=(work,), name="local-moe-turn", daemon=True
        )
        worker.start()
        try:
            async with receive:
                async for item in receive:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            cancelled.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(worker.join)

    # ------------------------------------------------------------------ one turn
    def sampling_params(self, settings: ModelSettings) -> SamplingParams:
        d = self.defaults
        temperature = d.temperature if settings.temperature is None else settings.temperature
        return SamplingParams(
            max_new_tokens=d.max_new_tokens if settings.max_tokens is None else settings.max_tokens,
            temperature=temperature,
            top_k=d.top_k if settings.top_k is None else settings.top_k,
            top_p=d.top_p if settings.top_p is None else settings.top_p,
            seed=settings.seed,
            stop_token_ids=self.stop_token_ids,
        )

    def _turn_events(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ModelSettings,
        cancelled: threading.Event,
    ) -> Generator[ModelEvent, None, None]:
        """Generate one turn (in the worker thread), yielding events as tokens arrive."""
        try:
            params = self.sampling_params(settings)
        except ValueError as exc:
            raise UserError(f"model settings: {exc}") from None
        tool_choice = settings.tool_choice
        if tool_choice not in ("auto", "required", "none") and not any(
            t.name == tool_choice for t in tools
        ):
            raise UserError(f"tool_choice names {tool_choice!r}, which is not an offered tool")
        prompt = self.format.render(messages, tools)
        if not self.reasoning:
            # The template writes an empty thinking block for a turn without reasoning: give it
            # to the model as written, so the turn renders back exactly (prefix cache).
            prompt.extend(self.format.empty_reasoning)
        earlier_calls = sum(len(m.tool_calls) for m in messages if isinstance(m, AssistantMessage))
        grammar = None
        if self.constrain:
            grammar = tool_grammar(self.format, tools, tool_choice, reasoning=self.reasoning)
        with self._lock, self._span(len(prompt)) as scope:
            try:
                yield from self._generate(
                    prompt, params, grammar, settings.stop, cancelled, earlier_calls, scope
                )
            except GeneratorExit:  # the caller stopped listening (a cancelled request)
                scope.fail("cancelled", "the turn was stopped before it finished")
                return

    def _span(self, prompt_tokens: int) -> SpanScope:
        """The ``moe generate`` span of one turn (prefill and decode), when tracing."""
        if not tracing_enabled():
            return NO_SPAN
        return span(
            "moe generate",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": self.provider_name,
                "gen_ai.request.model": self.model_name,
                "agent_runtime.moe.prompt_tokens": prompt_tokens,
            },
        )

    def _generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        grammar: Any,
        stop_strings: Sequence[str],
        cancelled: threading.Event,
        earlier_calls: int = 0,
        scope: SpanScope = NO_SPAN,
    ) -> Iterator[ModelEvent]:
        cache, reused = self.prefix_cache.take(prompt)
        if cache is None:
            cache = self.model.new_cache(1, capacity=len(prompt) + params.max_new_tokens)
        constraint = grammar.matcher() if grammar is not None else None
        parser = self.format.parser(first_call_index=earlier_calls)
        stop_text = _StopText(stop_strings)
        generator = None
        if params.temperature > 0 and params.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(params.seed)
        turn = TurnStats(prompt_tokens=len(prompt), cached_tokens=reused)
        chunks = decode(
            self.model,
            prompt[reused:],
            cache,
            params,
            constraint=constraint,
            jump_forward=self.jump_forward,
            vocab_limit=self.tokenizer.vocab_size,
            generator=generator,
        )
        finished = False
        thought = 0  # characters of the parser's reasoning already sent
        timing = _Timing(time.perf_counter())
        error_type: str | None = None  # what stopped the turn, for its spans
        try:
            for chunk in chunks:
                if timing.first_at is None:
                    timing.first(len(chunk.tokens))
                turn.tokens.extend(chunk.tokens)
                turn.output_tokens += len(chunk.tokens)
                if chunk.forced:
                    turn.forced_tokens += len(chunk.tokens)
                for tok in chunk.tokens:
                    if tok in self.stop_token_ids:
                        continue
                    events = parser.feed(tok)
                    if len(parser.reasoning) > thought:
                        yield ReasoningDelta(text=parser.reasoning[thought:])
                        thought = len(parser.reasoning)
                    yield from self._filtered(events, stop_text)
                if stop_text.hit:
                    break
                if cancelled.is_set():
                    error_type = "cancelled"
                    scope.fail(error_type, "the turn was stopped before it finished")
                    return
            else:
                finished = True
            yield from self._filtered(parser.finish(), stop_text)
            tail = stop_text.flush()
            if tail:
                yield TextDelta(text=tail)
            ended_by_model = bool(turn.tokens) and turn.tokens[-1] in self.stop_token_ids
            if stop_text.hit or (finished and ended_by_model):
                turn.finish_reason = "tool_calls" if parser.saw_tool_calls else "stop"
            else:
                turn.finish_reason = "length"
            self.last_turn = turn
            yield ModelFinish(
                usage=Usage(
                    requests=1,
                    input_tokens=turn.prompt_tokens,
                    output_tokens=turn.output_tokens,
                    cached_tokens=turn.cached_tokens,
                ),
                finish_reason=turn.finish_reason,
            )
        except BaseException as exc:  # closed by the caller (a cancelled request), or failed
            error_type = "cancelled" if isinstance(exc, GeneratorExit) else error_type_of(exc)
            raise
        finally:
            chunks.close()
            # The cache holds the prompt and the tokens fed back so far: keep it for the next
            # step of this conversation.
            self.prefix_cache.put([*prompt, *turn.tokens], cache)
            if scope.recording:
                timing.record(scope, turn, error_type)

    @staticmethod
    def _filtered(events: Sequence[ModelEvent], stop_text: _StopText) -> Iterator[ModelEvent]:
        for event in events:
            if isinstance(event, TextDelta):
                if stop_text.hit:
                    continue
                text = stop_text.feed(event.text)
                if text:
                    yield TextDelta(text=text)
            elif not stop_text.hit:
                yield event


def _dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    found = _DTYPES.get(dtype.lower())
    if found is None:
        raise UserError(f"dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)}")
    return found
