"""Train the embedded tool-calling model from scratch: ``python -m agent_runtime.model.train``.

One readable script, top to bottom: a small BPE tokenizer in Kimi K2's folder layout (with a split
pattern that keeps argument values copyable), a stream of procedurally generated tool-use
conversations (:mod:`.corpus`) rendered in the Kimi K2 chat format through the checkpoint's own
compact template, packed into fixed-length rows, and a Kimi K2-architecture MoE
(:class:`.trainable.TrainableMoE`: MLA, sigmoid-routed experts with a shared expert,
auxiliary-loss-free bias balancing) trained with AdamW on a cosine schedule. Everything is seeded:
the same recipe on the same machine gives the same checkpoint. The output is a checkpoint folder
the runtime loads (``config.json``, ``model.safetensors``, ``tiktoken.model``,
``tokenizer_config.json``, ``chat_template.jinja``, ``generation_config.json``) plus
``training_log.json`` and ``loss.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .chat_format import KimiK2ChatFormat, kimi_template_messages
from .chat_template import KIMI_K2_COMPACT_TEMPLATE, ChatTemplate
from .config import MoEConfig
from .corpus import Task, training_tasks
from .corpus.lexicon import Words
from .tokenizer import KimiTokenizer, Tokenizer
from .tokenizer_train import train_kimi_tokenizer
from .trainable import TrainableMoE

__all__ = ["COPY_PATTERN", "Recipe", "encode_task", "main", "train"]

#: Pre-tokenisation of the embedded model: letter runs, single digits, single whitespace
#: characters, punctuation runs. A value is then the same tokens in the request, in the call's
#: JSON and in the tool result, whatever surrounds it, which is what makes copying learnable.
COPY_PATTERN = r"[\p{L}\p{M}]+|\p{N}|\s|[^\s\p{L}\p{M}\p{N}]+"

_CONTROL = re.compile(r"<\|[a-z_]+\|>|</?think>")


@dataclass
class Recipe:
    """Everything that decides the trained model (the defaults are the shipped model's)."""

    seed: int = 1234
    steps: int = 2100
    batch_tokens: int = 8192  # tokens per batch, padding included
    bucket: int = 256  # documents sorted by length together (see ``batches``)
    max_doc_tokens: int = 1024  # longer conversations are left out
    lr: float = 3e-3
    min_lr_fraction: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bias_update_rate: float = 1e-3  # DeepSeek-V3's gamma, per step
    prompt_weight: float = 0.25  # loss weight of non-assistant tokens (assistant turns: 1)
    copy_warmup_steps: int = 300  # copy exercises mixed in early, fading out by this step
    copy_fraction: float = 0.5  # share of documents that are copy exercises at step 0
    tokenizer_vocab: int = 2048  # base BPE vocabulary (Kimi's 256 special ids follow)
    tokenizer_tasks: int = 6000
    threads: int = 2
    model: dict[str, Any] = field(
        default_factory=lambda: {
            "hidden_size": 256,
            "intermediate_size": 768,
            "moe_intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "q_lora_rank": 128,
            "kv_lora_rank": 64,
            "qk_nope_head_dim": 32,
            "qk_rope_head_dim": 16,
            "v_head_dim": 32,
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "n_shared_experts": 1,
            "first_k_dense_replace": 1,
            "routed_scaling_factor": 1.0,
        }
    )


def _config(recipe: Recipe, tokenizer: KimiTokenizer) -> MoEConfig:
    eos = tokenizer.special_id("<|im_end|>")
    raw: dict[str, Any] = {
        "model_type": "kimi_k2",
        "architectures": ["DeepseekV3ForCausalLM"],
        "vocab_size": tokenizer.vocab_size,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": eos,
        "tie_word_embeddings": False,
        **recipe.model,
    }
    return MoEConfig.from_hf(raw)


# ---------------------------------------------------------------------------------- data


def build_tokenizer(folder: Path, recipe: Recipe) -> KimiTokenizer:
    """Train the BPE on the text of training conversations (control tokens left out)."""
    stream = training_tasks(recipe.seed + 1)
    template = ChatTemplate(KIMI_K2_COMPACT_TEMPLATE)
    texts = []
    for _ in range(recipe.tokenizer_tasks):
        task = next(stream)
        messages, tools = kimi_template_messages(task.messages(), task.tools)
        text = template.render(messages, tools, add_generation_prompt=False).text
        texts.append(_CONTROL.sub("\n", text))
    train_kimi_tokenizer(texts, folder, vocab_size=recipe.tokenizer_vocab, pattern=COPY_PATTERN)
    return KimiTokenizer.from_folder(folder)


def encode_task(
    fmt: KimiK2ChatFormat, task: Task, prompt_weight: float
) -> tuple[list[int], list[float]]:
    """A conversation's token ids and the loss weight of predicting each of them: 1 inside
    assistant turns (after ``<|im_middle|>``, through ``<|im_end|>``), ``prompt_weight`` else."""
    ids = fmt.render(task.messages(), task.tools, add_generation_prompt=False)
    tok = fmt.tokenizer
    assistant = tok.special_id("<|im_assistant|>")
    middle = tok.special_id("<|im_middle|>")
    end = tok.special_id("<|im_end|>")
    weights = []
    state = 0  # 0 outside, 1 in an assistant header, 2 in an assistant body
    for token in ids:
        weights.append(1.0 if state == 2 else prompt_weight)
        if token == assistant:
            state = 1
        elif token == middle and state == 1:
            state = 2
        elif token == end:
            state = 0
    return ids, weights


@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, T]
    targets: torch.Tensor  # [rows, T], -1 where nothing is predicted
    weights: torch.Tensor  # [rows, T]
    positions: torch.Tensor
    doc_ids: torch.Tensor  # -1 on padding
    assistant: torch.Tensor  # bool: the target is an assistant token


def copy_exercise(rng: random.Random, tokenizer: Tokenizer) -> tuple[list[int], list[float]]:
    """A warm-up document: a run of made-up words, digits and codes, ``<|im_middle|>``, then the
    same run again; only the repeat is scored. Induction (find the earlier occurrence, copy what
    followed it) is what argument values need, and it forms much sooner on pure repeats."""
    words = Words(rng, "train")
    kinds = ("word", "name", "code", "integer", "date", "email", "phrase")
    text = " ".join(str(words.value(rng.choice(kinds))) for _ in range(rng.randint(3, 12)))
    run = tokenizer.encode(text)
    middle = tokenizer.special_id("<|im_middle|>")
    ids = [*run, middle, *run]
    weights = [0.0] * (len(run) + 1) + [1.0] * len(run)
    return ids, weights


def batches(fmt: KimiK2ChatFormat, recipe: Recipe) -> Iterator[Batch]:
    """Batches of about ``batch_tokens`` tokens (padding included), one document per row.

    Documents are drawn ``bucket`` at a time, sorted by length and cut into batches of similar
    lengths, which then come in a seeded random order: little padding, and attention stays
    plain causal (no packing mask, the upper triangle skipped). Early on, copy exercises are
    mixed in (a share fading linearly to none at ``copy_warmup_steps``)."""
    stream = training_tasks(recipe.seed)
    rng = random.Random(recipe.seed + 2)
    step = 0
    while True:
        share = recipe.copy_fraction * max(0.0, 1 - step / max(1, recipe.copy_warmup_steps))
        docs: list[tuple[list[int], list[float]]] = []
        while len(docs) < recipe.bucket:
            if rng.random() < share:
                docs.append(copy_exercise(rng, fmt.tokenizer))
                continue
            ids, w = encode_task(fmt, next(stream), recipe.prompt_weight)
            if len(ids) <= recipe.max_doc_tokens:
                docs.append((ids, w))
        docs.sort(key=lambda d: len(d[0]))
        groups: list[list[tuple[list[int], list[float]]]] = [[]]
        for doc in docs:
            group = groups[-1]
            if group and (len(group) + 1) * len(doc[0]) > recipe.batch_tokens:
                groups.append([doc])
            else:
                group.append(doc)
        rng.shuffle(groups)
        for group in groups:
            step += 1
            yield _tensors([[doc] for doc in group], len(group[-1][0]))


def _tensors(rows: list[list[tuple[list[int], list[float]]]], t_len: int) -> Batch:
    n = len(rows)
    input_ids = torch.zeros(n, t_len, dtype=torch.long)
    targets = torch.full((n, t_len), -1, dtype=torch.long)
    weights = torch.zeros(n, t_len)
    positions = torch.zeros(n, t_len, dtype=torch.long)
    doc_ids = torch.full((n, t_len), -1, dtype=torch.long)
    assistant = torch.zeros(n, t_len, dtype=torch.bool)
    for r, docs in enumerate(rows):
        at = 0
        for d, (ids, w) in enumerate(docs):
            k = len(ids)
            input_ids[r, at : at + k] = torch.tensor(ids)
            targets[r, at : at + k - 1] = torch.tensor(ids[1:])
            weights[r, at : at + k - 1] = torch.tensor(w[1:])
            assistant[r, at : at + k - 1] = torch.tensor([x == 1.0 for x in w[1:]])
            positions[r, at : at + k] = torch.arange(k)
            doc_ids[r, at : at + k] = d
            at += k
    return Batch(input_ids, targets, weights, positions, doc_ids, assistant)


# ---------------------------------------------------------------------------------- training


def _lr(recipe: Recipe, step: int) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    floor = recipe.min_lr_fraction
    return recipe.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _optimizer(model: TrainableMoE, recipe: Recipe) -> torch.optim.AdamW:
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed" not in name else plain).append(p)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.95), eps=1e-8)


def train(
    out: Path, recipe: Recipe, *, log_every: int = 25, snapshot_every: int = 0
) -> dict[str, Any]:
    """Train and write the checkpoint folder to ``out``; returns the training log. With
    ``snapshot_every`` > 0, a loadable copy of the model so far is written to
    ``out/snapshots/step-N`` every that many steps (to evaluate a run while it goes on)."""
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tokenizer = build_tokenizer(out, recipe)
    (out / "chat_template.jinja").write_text(KIMI_K2_COMPACT_TEMPLATE, encoding="utf-8")
    fmt = KimiK2ChatFormat(tokenizer, ChatTemplate(KIMI_K2_COMPACT_TEMPLATE))
    config = _config(recipe, tokenizer)
    model = TrainableMoE(config, seed=recipe.seed)
    model.train()
    optimizer = _optimizer(model, recipe)
    log: dict[str, Any] = {
        "recipe": asdict(recipe),
        "parameters": model.parameter_count(),
        "active_parameters_per_token": model.active_parameters_per_token(),
        "points": [],
    }
    print(
        f"model: {log['parameters'] / 1e6:.2f}M parameters, "
        f"{log['active_parameters_per_token'] / 1e6:.2f}M active per token; "
        f"vocabulary {tokenizer.vocab_size}",
        flush=True,
    )
    data = batches(fmt, recipe)
    seen_tokens = 0
    window: list[tuple[float, float, int]] = []
    tick = time.perf_counter()
    for step in range(recipe.steps):
        batch = next(data)
        for group in optimizer.param_groups:
            group["lr"] = _lr(recipe, step)
        logits = model(batch.input_ids, positions=batch.positions, doc_ids=batch.doc_ids)
        flat_targets = batch.targets.view(-1)
        losses = F.cross_entropy(
            logits.view(-1, logits.shape[-1]), flat_targets.clamp(min=0), reduction="none"
        )
        w = batch.weights.view(-1)
        loss = (losses * w).sum() / w.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        model.update_router_bias(recipe.bias_update_rate)
        with torch.no_grad():
            mask = batch.assistant.view(-1)
            assistant_loss = float(losses[mask].mean()) if mask.any() else float("nan")
        real = int((batch.doc_ids >= 0).sum())
        seen_tokens += real
        window.append((float(loss.detach()), assistant_loss, real))
        if (step + 1) % log_every == 0 or step + 1 == recipe.steps:
            now = time.perf_counter()
            point = {
                "step": step + 1,
                "tokens": seen_tokens,
                "loss": sum(x[0] for x in window) / len(window),
                "assistant_loss": sum(x[1] for x in window) / len(window),
                "tokens_per_s": sum(x[2] for x in window) / (now - tick),
                "lr": _lr(recipe, step),
                "minutes": (now - started) / 60,
            }
            log["points"].append(point)
            print(
                f"step {point['step']:5d}  tokens {seen_tokens / 1e6:6.2f}M  "
                f"loss {point['loss']:.3f}  assistant {point['assistant_loss']:.3f}  "
                f"{point['tokens_per_s']:.0f} tok/s  {point['minutes']:.1f} min",
                flush=True,
            )
            window.clear()
            tick = now
        if snapshot_every and (step + 1) % snapshot_every == 0 and step + 1 < recipe.steps:
            _snapshot(model, out, out / "snapshots" / f"step-{step + 1}", tokenizer)
            tick = time.perf_counter()  # saving is not training time
    model.eval()
    model.save_pretrained(out, dtype=torch.bfloat16)
    _write_generation_config(out, tokenizer)
    log["minutes"] = (time.perf_counter() - started) / 60
    log["tokens"] = seen_tokens
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    plot_loss(log, out / "loss.png")
    return log


def _snapshot(model: TrainableMoE, out: Path, folder: Path, tokenizer: KimiTokenizer) -> None:
    model.save_pretrained(folder, dtype=torch.bfloat16)
    for name in ("tiktoken.model", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).write_bytes((out / name).read_bytes())
    _write_generation_config(folder, tokenizer)


def _write_generation_config(out: Path, tokenizer: KimiTokenizer) -> None:
    config = {
        "eos_token_id": [tokenizer.special_id("<|im_end|>")],
        "do_sample": False,
        "temperature": 0.0,
        "max_new_tokens": 256,
    }
    (out / "generation_config.json").write_text(
        json.dumps(config, indent=2) + "\n", encoding="utf-8"
    )


def plot_loss(log: dict[str, Any], path: Path) -> None:
    """The loss curves (all tokens, assistant turns) against tokens seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = log["points"]
    tokens = [p["tokens"] / 1e6 for p in points]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(tokens, [p["loss"] for p in points], label="weighted loss (all tokens)")
    ax.plot(tokens, [p["assistant_loss"] for p in points], label="assistant turns")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("embedded model training")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent_runtime.model.train",
        description="Train the embedded tool-calling MoE from scratch (seeded, CPU by default).",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--threads", type=int, default=Recipe.threads)
    parser.add_argument(
        "--snapshot-every", type=int, default=0, help="save a loadable copy every N steps"
    )
    args = parser.parse_args(argv)
    recipe = Recipe(steps=args.steps, seed=args.seed, threads=args.threads)
    train(args.out, recipe, snapshot_every=args.snapshot_every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
