"""MoME+: one case, several co-registered sequences, any of them missing (the journal extension of MoME).

The input has one channel per expert sequence and comes with an availability mask ``c`` (B, K) in {0, 1}. A soft
dispatch network turns ``c`` into a K x K matrix ``D`` whose row k says how expert k's input is mixed from the
input channels: an available sequence passes through unchanged (identity row), a missing one is synthesised from
the available ones (its row's weights on missing columns are zero). Expert k then segments channel k of
``S = D x``; the gate sees ``S`` and every expert's first encoder stage as in MoME, and ``c`` again, broadcast and
concatenated at its bottleneck. Fusion is MoME's. Whatever a missing channel holds never reaches any output.

The eval forward is the training forward without deep supervision (MoME's lean forward, which never builds the
gate's input, is not carried over yet): it holds every expert's features at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from scripts.mome import MODALITIES, PRESETS, MoME, UNet, build_unet

__all__ = ["PLUS_MODALITIES", "Dispatch", "MoMEPlus", "ZeroFillUNet", "all_masks", "draw_masks"]

#: The published MoME+ experts: the four BraTS sequences (DWI is never acquired with them there).
PLUS_MODALITIES: tuple[str, ...] = MODALITIES[:4]

#: Added in the dispatch matrix's row-wise min-max normalisation (as in the reference): no division by zero for a
#: constant row, and every available column keeps a weight above zero.
_EPS = 1e-4


def all_masks(k: int) -> torch.Tensor:
    """Every non-empty availability mask of ``k`` sequences, (2^k - 1, k), in binary counting order."""
    rows = [m for m in itertools.product((0.0, 1.0), repeat=k) if any(m)]
    return torch.tensor(sorted(rows, key=lambda m: int("".join(str(int(v)) for v in reversed(m)), 2)))


def draw_masks(n: int, k: int, generator: torch.Generator | None = None, prior: torch.Tensor | None = None):
    """``n`` availability masks drawn from the 2^k - 1 non-empty ones: uniformly (the reference), or with weights
    ``prior`` over :func:`all_masks` (e.g. to favour the combinations a site acquires)."""
    masks = all_masks(k)
    weights = torch.ones(len(masks)) if prior is None else torch.as_tensor(prior, dtype=torch.float)
    if weights.shape != (len(masks),) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"prior must be {len(masks)} non-negative weights (one per non-empty mask), not all zero")
    return masks[torch.multinomial(weights, n, replacement=True, generator=generator)]


class Dispatch(nn.Module):
    """Availability (B, K) -> dispatch matrix (B, K, K): an MLP ``K -> K -> 2K -> 4K -> K*K`` (the reference's
    4-4-8-16-16 for K = 4), each row min-max normalised, missing columns zeroed, available rows the identity."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        sizes = (k, k, 2 * k, 4 * k, k * k)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers[:-1])

    def forward(self, available: torch.Tensor) -> torch.Tensor:
        b, k = available.shape
        d = self.mlp(available).view(b, k, k)
        lo, hi = d.amin(dim=-1, keepdim=True), d.amax(dim=-1, keepdim=True)
        d = (d - lo + _EPS) / (hi - lo + _EPS)
        d = d * available[:, None, :]  # a missing sequence contributes to no expert's input
        eye = torch.eye(k, dtype=d.dtype, device=d.device).expand(b, k, k)
        return torch.where(available[:, :, None] > 0, eye, d)


class MoMEPlus(MoME):
    """MoME over a K-channel case (one channel per entry of ``modalities``, in that order) with an availability
    mask; ``forward(x, available)``, ``available`` (B, K) in {0, 1} with at least one 1 per case (``None``: all
    present). Outputs as :class:`MoME`, with ``"dispatch"`` (B, K, K) added to the training dict. Sliding-window
    inference: one case at a time with its (1, K) mask (MONAI batches windows of several cases together)."""

    def __init__(
        self,
        preset: str = "small",
        modalities: Sequence[str] = PLUS_MODALITIES,
        num_classes: int = 2,
        gate_activation: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(preset, modalities, num_classes, 1, gate_activation, dropout)
        self.dispatch = Dispatch(len(self.modalities))

    def _build_gate(self, preset: str) -> UNet:
        """MoME's gate on ``S`` (K channels, not one image) with K more input channels to its first transposed
        convolution: the availability prior at the bottleneck."""
        k = len(self.modalities)
        gate = build_unet(k + k * PRESETS[preset]["features_per_stage"][0], k * self.num_classes, preset)
        up = gate.decoder.transpconvs[0]
        gate.decoder.transpconvs[0] = nn.ConvTranspose3d(
            up.in_channels + k, up.out_channels, up.kernel_size, up.stride, bias=up.bias is not None
        )
        gate.decoder.transpconvs[0].apply(InitWeights_He(1e-2))
        return gate

    def availability(self, x: torch.Tensor, available: torch.Tensor | None) -> torch.Tensor:
        """The mask as a float (B, K) tensor, checked: one entry per sequence, 0 or 1, at least one sequence. A (K,) or
        (1, K) mask applies to every batch entry (a sliding window batches windows of one case)."""
        k = len(self.modalities)
        if available is None:
            return torch.ones(x.shape[0], k, dtype=x.dtype, device=x.device)
        c = torch.as_tensor(available, device=x.device).to(x.dtype)
        if c.ndim == 1 or (c.ndim == 2 and c.shape[0] == 1 and x.shape[0] > 1):
            c = c.reshape(1, -1).expand(x.shape[0], -1)  # one case's mask for a batch of its windows
        if c.shape != (x.shape[0], k):
            raise ValueError(f"availability must have shape (batch, {k}) = {(x.shape[0], k)}, got {tuple(c.shape)}")
        if not torch.isin(c, torch.tensor([0.0, 1.0], dtype=c.dtype, device=c.device)).all():
            raise ValueError("availability entries must be 0 (missing) or 1 (present)")
        if (c.sum(dim=1) == 0).any():
            raise ValueError(f"a case has no available sequence (of {', '.join(self.modalities)})")
        return c

    def _check_input(self, x: torch.Tensor) -> None:
        k = len(self.modalities)
        if x.ndim != 5 or x.shape[1] != k:
            raise ValueError(
                f"MoME+ expects a (batch, {k}, D, H, W) case, one channel per sequence "
                f"({', '.join(self.modalities)}), got shape {tuple(x.shape)}"
            )
        super()._check_input(x[:, :1])

    def forward(
        self, x: torch.Tensor, available: torch.Tensor | None = None, with_aux: bool = False
    ) -> torch.Tensor | dict:
        self._check_input(x)
        c = self.availability(x, available)
        d = self.dispatch(c)
        s = torch.einsum("bkj,bj...->bk...", d, torch.where(c[:, :, None, None, None] > 0, x, 0))
        skips = [expert.encoder(s[:, k : k + 1]) for k, expert in enumerate(self.experts)]
        experts = [self._decode(expert, sk) for expert, sk in zip(self.experts, skips, strict=True)]
        gate_skips = [self.dropout(h) for h in self.gate.encoder(torch.cat([s, *(sk[0] for sk in skips)], dim=1))]
        del skips
        bottom = gate_skips[-1]
        prior = c[:, :, None, None, None].expand(-1, -1, *bottom.shape[2:])
        out = self.gate.decoder([*gate_skips[:-1], torch.cat([bottom, prior], dim=1)])
        weights = [self.gate_weights(w) for w in (out if isinstance(out, list) else [out])]
        fused = [self.fuse(w, [e[level] for e in experts]) for level, w in enumerate(weights)]
        if self.training:
            return {"fused": fused, "experts": experts, "dispatch": d}
        if with_aux:  # spatial outputs only (a sliding window stitches every key); the dispatch is in training's dict
            logits = torch.cat([e[0] for e in experts], dim=1)
            return {"logits": fused[0], "gate": weights[0], "experts": logits}
        return fused[0]


class ZeroFillUNet(nn.Module):
    """The baseline MoME+ is measured against: one nnU-Net U-Net on the K channels with missing sequences
    zero-filled, which is what a multi-channel model does without a dispatch network. ``available`` only zeroes the
    missing channels; the arguments are MoME+'s, so the same configs build either."""

    def __init__(
        self,
        preset: str = "small",
        modalities: Sequence[str] = PLUS_MODALITIES,
        num_classes: int = 2,
        gate_activation: str | None = None,
    ) -> None:
        super().__init__()
        self.modalities, self.num_classes = tuple(modalities), num_classes
        self.unet = build_unet(len(self.modalities), num_classes, preset)
        self.num_levels = len(self.unet.decoder.stages)

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None, with_aux: bool = False):
        if available is not None:
            mask = torch.as_tensor(available, device=x.device).to(x.dtype).reshape(-1, len(self.modalities))
            x = x * mask.expand(x.shape[0], -1)[:, :, None, None, None]
        return self.unet(x)
