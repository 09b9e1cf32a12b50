"""The compressed MLA cache: per token only the normed latent ``c_kv`` and the roped shared key.

For Kimi K2 that is 512 + 64 values per token and layer instead of 64 heads x (192 + 128) for
expanded keys and values, 36x less memory and memory traffic. Both parts live side by side in one
preallocated tensor per layer, ``[batch, capacity, kv_lora_rank + qk_rope_head_dim]``, so a decode
step scores a query against the whole row with a single matmul and never allocates.

Batches of prompts with different lengths are left-padded: every sequence shares the slot index,
``pad[b]`` slots at the front of sequence ``b`` are invalid keys, and a token's rotary position
is its slot minus ``pad[b]``, so each sequence sees exactly what it would see alone.
"""

from __future__ import annotations

import torch

__all__ = ["LatentCache"]


class LatentCache:
    """Per-layer latent rows plus the bookkeeping shared by all layers of one forward."""

    def __init__(
        self,
        num_layers: int,
        batch: int,
        width: int,
        *,
        capacity: int = 256,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        pad: list[int] | None = None,
    ) -> None:
        self.num_layers = num_layers
        self.batch = batch
        self.width = width
        self.dtype = dtype
        self.device = torch.device(device)
        self.capacity = max(1, capacity)
        self.layers = [
            torch.empty(batch, self.capacity, width, dtype=dtype, device=self.device)
            for _ in range(num_layers)
        ]
        self.length = 0
        pad = list(pad) if pad is not None else [0] * batch
        if len(pad) != batch:
            raise ValueError(f"pad has {len(pad)} entries for a batch of {batch}")
        self.pad = pad
        self._pad_t = torch.tensor(pad, dtype=torch.long, device=self.device)
        self.has_padding = any(p > 0 for p in pad)

    def reserve(self, total: int) -> None:
        """Make room for ``total`` slots (copying what is there) before a forward writes them."""
        if total <= self.capacity:
            return
        new_cap = max(total, 2 * self.capacity)
        for i, old in enumerate(self.layers):
            grown = torch.empty(
                self.batch, new_cap, self.width, dtype=self.dtype, device=self.device
            )
            grown[:, : self.length].copy_(old[:, : self.length])
            self.layers[i] = grown
        self.capacity = new_cap

    def positions(self, start: int, length: int) -> torch.Tensor:
        """Rotary positions ``[batch, length]`` of the slots start..start+length-1."""
        slots = torch.arange(start, start + length, device=self.device)
        return (slots[None, :] - self._pad_t[:, None]).clamp_min(0)

    def key_valid(self, end: int) -> torch.Tensor:
        """``[batch, end]`` bool: which slots hold real tokens (not left padding)."""
        slots = torch.arange(end, device=self.device)
        return slots[None, :] >= self._pad_t[:, None]

    def advance(self, n: int) -> None:
        self.length += n

    def truncate(self, length: int) -> None:
        """Forget everything after ``length`` slots (e.g. to reuse a shared prompt prefix)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} slots to {length}")
        self.length = length

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers)
