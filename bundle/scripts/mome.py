"""MoME: a mixture of modality experts for brain-lesion segmentation.

K expert U-Nets (one per MRI modality) each segment the same single-channel image; a gating U-Net looks at the
image and at every expert's first encoder stage and emits, at every deep-supervision level, one weight per voxel,
expert and class. The fused logits are the weighted sum of the experts' logits (Zhang et al., MICCAI 2024).

All six networks are nnU-Net ``PlainConvUNet``s from dynamic-network-architectures, so official nnU-Net
checkpoints load key for key (see ``convert_official.py``). The module knows nothing about files, losses or Ignite.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

__all__ = ["MODALITIES", "PRESETS", "MoME", "UNet", "build_unet", "preset_of", "preset_stride"]

#: Expert order of the reference implementation; the index of a modality here is its expert.
MODALITIES: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR", "DWI")

#: Network shapes. ``paper`` is the published nnU-Net 3d_fullres plan (6 stages, 32-320 features, 128^3 patches);
#: ``small`` keeps the same block design at a quarter of the width and one stage less, for CPUs and tests
#: (stride product 16, so any patch that is a multiple of 16 works).
PRESETS: dict[str, dict] = {
    "paper": {"features_per_stage": (32, 64, 128, 256, 320, 320), "strides": (1, 2, 2, 2, 2, 2)},
    "small": {"features_per_stage": (8, 16, 32, 64, 128), "strides": (1, 2, 2, 2, 2)},
}


class UNet(PlainConvUNet):
    """nnU-Net's ``PlainConvUNet`` that returns deep supervision in ``train()`` mode and one tensor in ``eval()``.

    Same parameters and state-dict keys as the stock class, so nnU-Net weights load unchanged.
    """

    def train(self, mode: bool = True) -> UNet:
        super().train(mode)
        self.decoder.deep_supervision = mode
        return self

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        """As the stock class; ``with_aux`` is accepted (and ignored: one U-Net has no gate or experts) so that
        evaluation calls a single U-Net and MoME alike."""
        return super().forward(x)


def build_unet(in_channels: int = 1, num_classes: int = 2, preset: str = "small") -> UNet:
    """One nnU-Net U-Net (3^3 kernels, 2 convs per stage, InstanceNorm, LeakyReLU 0.01, He init): an expert,
    the gate, or on its own a single-modality / universal baseline."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    shape = PRESETS[preset]
    n_stages = len(shape["features_per_stage"])
    net = UNet(
        input_channels=in_channels,
        n_stages=n_stages,
        features_per_stage=shape["features_per_stage"],
        conv_op=nn.Conv3d,
        kernel_sizes=3,
        strides=shape["strides"],
        n_conv_per_stage=2,
        num_classes=num_classes,
        n_conv_per_stage_decoder=2,
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"negative_slope": 1e-2, "inplace": True},
        deep_supervision=True,
    )
    net.apply(InitWeights_He(1e-2))
    return net


def preset_stride(preset: str) -> int:
    """Product of a preset's encoder strides: network input sizes must be multiples of it."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return math.prod(PRESETS[preset]["strides"])


def preset_of(state_dict: dict) -> str:
    """The preset a MoME state dict was built with, read from its tensor shapes (for servers given only weights)."""
    stage = "experts.0.encoder.stages.{}.0.convs.0.conv.weight"
    for name, shape in PRESETS.items():
        widths = shape["features_per_stage"]
        first, last = state_dict.get(stage.format(0)), state_dict.get(stage.format(len(widths) - 1))
        deeper = stage.format(len(widths)) in state_dict
        if (
            first is not None
            and last is not None
            and not deeper
            and (first.shape[0], last.shape[0])
            == (
                widths[0],
                widths[-1],
            )
        ):
            return name
    raise ValueError("state dict matches no MoME preset (" + ", ".join(PRESETS) + ")")


class MoME(nn.Module):
    """K modality experts fused voxel-wise by a hierarchical gate.

    Args:
        preset: key of :data:`PRESETS`.
        modalities: one expert per entry, in this order (the loss routes samples by index into it).
        num_classes: output classes including background.
        in_channels: image channels (1: MoME takes one image of any modality).
        gate_activation: ``None`` keeps the gate's raw weights (as published, needed for official weights);
            ``"softmax"`` normalises them over experts, per class and voxel.
        dropout: channel dropout on every encoder skip before the decoders; off in ``eval()`` unless a caller
            switches the ``nn.Dropout3d`` modules back to train mode (MC-dropout).

    ``train()`` mode returns ``{"fused": [levels], "experts": [[levels] per expert]}`` with deep-supervision levels
    highest resolution first. ``eval()`` mode returns one tensor, the fused logits at input resolution, or with
    ``with_aux=True`` a dict adding the gate weights and expert logits at full resolution (``B, K*C, ...``),
    computed in the same forward.
    """

    def __init__(
        self,
        preset: str = "small",
        modalities: Sequence[str] = MODALITIES,
        num_classes: int = 2,
        in_channels: int = 1,
        gate_activation: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        if gate_activation not in (None, "softmax"):
            raise ValueError(f"gate_activation must be None or 'softmax', got {gate_activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.modalities = tuple(modalities)
        if len(self.modalities) < 1:
            raise ValueError("MoME needs at least one expert modality")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.gate_activation = gate_activation
        self.stride = preset_stride(preset)
        k = len(self.modalities)
        self.experts = nn.ModuleList(build_unet(in_channels, num_classes, preset) for _ in range(k))
        stem = PRESETS[preset]["features_per_stage"][0]
        self.gate = build_unet(in_channels + k * stem, k * num_classes, preset)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.train()

    @property
    def num_levels(self) -> int:
        """Deep-supervision levels (one per decoder stage)."""
        return len(self.gate.decoder.stages)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"MoME expects a (batch, {self.in_channels}, D, H, W) image, got shape {tuple(x.shape)}")
        bad = [s for s in x.shape[2:] if s % self.stride]
        if bad:
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} must be divisible by the network's stride product "
                f"{self.stride} in every dimension (pad or choose a patch size that is a multiple of {self.stride})"
            )
        if math.prod(s // self.stride for s in x.shape[2:]) < 2:
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} is too small: instance norm needs more than one voxel at the "
                f"bottleneck, so at least one dimension must be >= {2 * self.stride}"
            )

    def _decode(self, net: UNet, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        out = net.decoder([self.dropout(s) for s in skips])
        return out if isinstance(out, list) else [out]

    def gate_weights(self, raw: torch.Tensor) -> torch.Tensor:
        """The gate's output (B, K*C, ...) as fusion weights: raw, or softmax over the K experts."""
        if self.gate_activation != "softmax":
            return raw
        return raw.unflatten(1, (len(self.experts), self.num_classes)).softmax(dim=1).flatten(1, 2)

    def fuse(self, weights: torch.Tensor, expert_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fused logits = sum_k W_k * Y_k, with W of shape (B, K*C, ...) and each Y_k of shape (B, C, ...)."""
        per_expert = weights.unflatten(1, (len(expert_logits), self.num_classes))
        return (per_expert * torch.stack(list(expert_logits), dim=1)).sum(dim=1)

    def forward(self, x: torch.Tensor, with_aux: bool = False) -> torch.Tensor | dict:
        self._check_input(x)
        if not self.training:
            return self._forward_lean(x, with_aux)
        skips = [expert.encoder(x) for expert in self.experts]
        experts = [self._decode(expert, s) for expert, s in zip(self.experts, skips, strict=True)]
        gate_input = torch.cat([x, *(s[0] for s in skips)], dim=1)
        weights = [self.gate_weights(w) for w in self._decode(self.gate, self.gate.encoder(gate_input))]
        fused = [self.fuse(w, [e[level] for e in experts]) for level, w in enumerate(weights)]
        return {"fused": fused, "experts": experts}

    def _forward_lean(self, x: torch.Tensor, with_aux: bool) -> torch.Tensor | dict:
        """The same function as the training forward at full resolution, holding one expert's features at a time.

        The gate's first convolution is linear in its input channels, so ``conv(cat(x, F_1..F_K))`` is accumulated
        as ``conv_x(x) + sum_k conv_k(F_k)`` right after each expert's encoder, and neither the
        ``1 + K*features`` channel gate input nor all experts' skips are ever in memory together.
        """
        block = self.gate.encoder.stages[0][0]  # stage 0 of the gate: its StackedConvBlocks (no pooling)
        first = block.convs[0]
        weight, c = first.conv.weight, self.in_channels
        conv = functools.partial(
            F.conv3d, stride=first.conv.stride, padding=first.conv.padding, dilation=first.conv.dilation
        )
        acc = conv(x, weight[:, :c], first.conv.bias)
        logits = []
        for expert in self.experts:
            skips = expert.encoder(x)
            width = skips[0].shape[1]
            acc.add_(conv(skips[0], weight[:, c : c + width]))
            c += width
            logits.append(self._decode(expert, skips)[0])
            del skips
        h = block.convs[1:](first.all_modules[1:](acc))
        gate_skips = [h]
        for stage in self.gate.encoder.stages[1:]:
            h = stage(h)
            gate_skips.append(h)
        weights = self.gate_weights(self._decode(self.gate, gate_skips)[0])
        fused = self.fuse(weights, logits)
        if not with_aux:
            return fused
        return {"logits": fused, "gate": weights, "experts": torch.cat(logits, dim=1)}
