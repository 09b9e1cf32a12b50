"""The routed-expert bank seam: how an MoE layer gets its experts' weights, in any storage format.

An :class:`ExpertLinear` is one expert projection stored in some format (dense, FP8 blocks, INT8,
INT4, ...) that can multiply activations by itself (``mm``) and give back its exact real weight
(``dequantize``, the reference every fast path is tested against). An :class:`ExpertBank` holds the
routed experts of one MoE layer and hands out, per forward, the (gate_up, down) pair of each expert
the layer needs: a resident bank returns its own objects, an offloading bank may read them from disk
or a cache and may use the layer input to prefetch the next layer's experts.

``gate_up`` is ``[2I, H]`` (the checkpoint's ``gate_proj`` rows, then its ``up_proj`` rows) and
``down`` is ``down_proj`` ``[H, I]``; ``mm`` computes ``x @ W.T``, the ``nn.Linear`` convention of
the checkpoint layout. When :class:`~.moe.MoEBlock` has a bank, its stacked ``w13`` / ``w2``
parameters hold no memory.

:class:`DenseExpertLinear` and :class:`ResidentExpertBank` are the plain implementations: a float
weight kept as is, and a list of pairs kept in memory (whatever their formats).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .cpu_kernels import xw

__all__ = [
    "DenseExpertLinear",
    "ExpertBank",
    "ExpertLinear",
    "ExpertPair",
    "ResidentExpertBank",
]


@runtime_checkable
class ExpertLinear(Protocol):
    """One expert projection in any storage format (dense, FP8 block, INT8, INT4, ...)."""

    in_features: int
    out_features: int

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [M, in] (the model dtype) -> ``x @ W.T`` [M, out] in ``x.dtype``."""
        ...

    def dequantize(self) -> torch.Tensor:
        """The exact real weight [out, in] in fp32."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes this weight occupies as stored (payload and scales)."""
        ...


ExpertPair = tuple[ExpertLinear, ExpertLinear]
"""(gate_up [2I <- H], down [H <- I]) of one expert."""


@runtime_checkable
class ExpertBank(Protocol):
    """The routed experts of one MoE layer."""

    n_experts: int

    def fetch(self, ids: Sequence[int], x: torch.Tensor) -> Sequence[ExpertPair]:
        """(gate_up [2I <- H], down [H <- I]) for each id, in order, ready to compute. ``x`` is
        this layer's MoE input ([N, H]): an offloading bank may use it to predict and prefetch the
        next layer's experts. Called once per forward of the layer with the distinct ids it needs."""
        ...

    @property
    def resident_bytes(self) -> int:
        """Bytes of expert weights this bank keeps in memory now."""
        ...


class DenseExpertLinear:
    """A float weight ``[out, in]`` kept as it is (any float dtype); ``mm`` runs in ``x.dtype``."""

    def __init__(self, weight: torch.Tensor) -> None:
        if weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(
                f"a dense expert weight is a 2-D float tensor, got {weight.dtype} {list(weight.shape)}"
            )
        self.weight = weight.detach()
        self.out_features, self.in_features = (int(d) for d in weight.shape)

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1 and x.is_cpu:
            # One row (decode): the native GEMV where available (it also reads a bf16 weight
            # with fp32 activations without a cast), torch otherwise.
            return xw(x, self.weight.t())
        # F.linear on the [out, in] layout: in bf16 on CPU it is several times faster than
        # torch.mm on a transposed copy.
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        return F.linear(x, w)

    def dequantize(self) -> torch.Tensor:
        return self.weight.to(torch.float32)

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()


class ResidentExpertBank:
    """Every expert of a layer kept in memory, as (gate_up, down) pairs of any formats."""

    def __init__(self, experts: Sequence[ExpertPair]) -> None:
        if not experts:
            raise ValueError("an expert bank needs at least one expert")
        self.experts: list[ExpertPair] = list(experts)
        self.n_experts = len(self.experts)

    def fetch(self, ids: Sequence[int], x: torch.Tensor) -> Sequence[ExpertPair]:
        experts = self.experts
        return [experts[e] for e in ids]

    @property
    def resident_bytes(self) -> int:
        return sum(gu.nbytes + down.nbytes for gu, down in self.experts)

    @classmethod
    def from_stacked(cls, w13: torch.Tensor, w2: torch.Tensor) -> ResidentExpertBank:
        """Dense experts from :class:`~.moe.MoEBlock`'s stacked ``w13`` [E, H, 2I] and ``w2``
        [E, I, H] (transposed storage): each expert's weight is copied out in ``[out, in]``."""
        return cls(
            [
                (
                    DenseExpertLinear(w13[e].t().contiguous()),
                    DenseExpertLinear(w2[e].t().contiguous()),
                )
                for e in range(w13.shape[0])
            ]
        )
