"""Fair queueing in ``agent-runtime serve-model``: one generation at a time, the others served in
the order they arrived, ``/health`` counting the waiting ones, and a 429 past ``--max-waiting``.

The server test drives a real ``serve-model`` process (a tiny checkpoint built here) with the
official ``openai`` client. The order is observed without timing: a streamed answer's HTTP
headers leave the server only once its generation has begun, so a client whose ``create`` call
returns holds the model. Every request asks for far more tokens than the test needs, and the
test closes each stream itself, which frees the model for exactly one waiting request; which one
gets it is what the test checks. The queue itself is also tested in-process with many waiters,
some of which give up while waiting.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import httpx
import openai
import pytest
from model_support import local_checkpoint
from serve_model_support import serve_model
from tokenizer_support import kimi_tokenizer_folder

from agent_runtime.protocols.openai.server_queue import GenerationQueue, QueueFull

MODEL = "tiny"
MAX_WAITING = 3
LONG = 4000
"""max_tokens of the held requests: far more than they get to generate before the test closes
them."""


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serve-model-queue")
    checkpoint = local_checkpoint(root / "ckpt", kimi_tokenizer_folder(root / "tok"), seed=1)
    args = ("--path", str(checkpoint), "--served-model-name", MODEL)
    with serve_model(*args, "--max-waiting", str(MAX_WAITING)) as url:
        yield url


def health(base_url: str) -> dict[str, Any]:
    answer = httpx.get(base_url.removesuffix("/v1") + "/health", timeout=10)
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


def wait_for_health(base_url: str, **expected: int) -> dict[str, Any]:
    """Poll ``/health`` until the given counters have the given values (or fail after 120 s)."""
    deadline = time.monotonic() + 120
    while True:
        now = health(base_url)
        if all(now[key] == value for key, value in expected.items()):
            return now
        assert time.monotonic() < deadline, (expected, now)
        time.sleep(0.02)


class HeldRequest:
    """A streamed completion on its own thread: it reports to ``started`` when its generation
    has begun (its ``create`` returned) and keeps its stream open until :meth:`close`."""

    def __init__(self, client: openai.OpenAI, name: str, started: queue.Queue[str]) -> None:
        self.name = name
        self.error: BaseException | None = None
        self.chunks = 0
        self._client = client
        self._started = started
        self._close = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"request-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            stream = self._client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"Request {self.name}: talk at length."}],
                temperature=1.0,
                seed=5,
                max_tokens=LONG,
                stream=True,
            )
        except BaseException as err:  # reported to the test through .error
            self.error = err
            self._started.put(f"error:{self.name}")
            return
        with stream:
            self._started.put(self.name)
            for _ in stream:  # read one chunk at least: the generation is really running
                self.chunks += 1
                break
            self._close.wait(timeout=300)

    def close(self) -> None:
        """Close the stream (the client leaves, which stops its generation) and wait."""
        self._close.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive()


def test_requests_are_generated_one_at_a_time_in_arrival_order(base_url: str) -> None:
    started: queue.Queue[str] = queue.Queue()
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300) as client:
        before = wait_for_health(base_url, active=0, waiting=0)

        first = HeldRequest(client, "A", started)
        assert started.get(timeout=120) == "A"
        wait_for_health(base_url, active=1, waiting=0)

        arrivals = ["B", "C", "D"]
        held = {"A": first}
        for count, name in enumerate(arrivals, start=1):  # arrivals in a known order
            held[name] = HeldRequest(client, name, started)
            wait_for_health(base_url, active=1, waiting=count)
        assert started.empty()  # nothing else began while A holds the model

        # one more than --max-waiting: refused at once, and it takes no place in the queue
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "E"}], max_tokens=2
            )
        assert refused.value.status_code == 429
        assert refused.value.response.headers["retry-after"] == "1"
        assert refused.value.body["type"] == "rate_limit_error"  # type: ignore[index]
        assert health(base_url)["waiting"] == MAX_WAITING

        order = ["A"]
        current = first
        for remaining in range(len(arrivals), 0, -1):
            current.close()  # frees the model for exactly one waiting request
            order.append(started.get(timeout=120))
            wait_for_health(base_url, active=1, waiting=remaining - 1)
            current = held[order[-1]]
        assert order == ["A", *arrivals]
        current.close()

        after = wait_for_health(base_url, active=0, waiting=0)
        assert after["cancelled"] == before["cancelled"] + 4  # each closed its stream early
        assert after["served"] == before["served"]
        assert all(request.error is None for request in held.values())
        assert all(request.chunks == 1 for request in held.values())

        done = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi."}], max_tokens=3
        )
        assert done.usage is not None and done.usage.completion_tokens == 3
        assert health(base_url)["served"] == before["served"] + 1


@pytest.mark.anyio
async def test_the_queue_hands_the_model_over_first_come_first_served() -> None:
    generations: list[int] = []
    gate = anyio.Event()
    slots = GenerationQueue(max_waiting=20)

    async def request(
        index: int, scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        with scope:
            task_status.started()  # what follows runs before the starter resumes: the arrival
            async with slots.slot():
                assert slots.active == 1
                generations.append(index)
                if index == 0:
                    await gate.wait()  # the first holds the model until every other arrived

    scopes = [anyio.CancelScope() for _ in range(21)]
    async with anyio.create_task_group() as group:
        for index, scope in enumerate(scopes):  # arrival order is start order
            await group.start(request, index, scope)
        assert slots.snapshot()["waiting"] == 20
        assert generations == [0]
        with pytest.raises(QueueFull):  # the 21st waiter is one too many
            async with slots.slot():
                pass
        for index in (3, 7, 8):  # clients that leave while waiting give up their places
            scopes[index].cancel()
        gate.set()
    assert generations == [i for i in range(21) if i not in (3, 7, 8)]
    assert slots.snapshot() == {"active": 0, "waiting": 0, "served": 0, "cancelled": 0}
