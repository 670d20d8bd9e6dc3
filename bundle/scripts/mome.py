"""MoME: a mixture of modality experts for brain-lesion segmentation (Zhang et al., MICCAI 2024).

K expert U-Nets (one per MRI modality) segment the same image; a gating U-Net sees the image and every expert's first
encoder stage and weighs the experts' logits per voxel, expert, class and deep-supervision level. All are nnU-Net
``PlainConvUNet``s, so official checkpoints load key for key (``convert_official.py``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

#: Expert order of the reference implementation; the index of a modality here is its expert.
MODALITIES: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR", "DWI")

#: Network shapes. ``paper`` is the published nnU-Net 3d_fullres plan (6 stages, 32-320 features, 128^3 patches);
#: ``small`` the same blocks at a quarter of the width and one stage less (stride 16), for CPUs and tests.
PRESETS: dict[str, dict] = {
    "paper": {"features_per_stage": (32, 64, 128, 256, 320, 320), "strides": (1, 2, 2, 2, 2, 2)},
    "small": {"features_per_stage": (8, 16, 32, 64, 128), "strides": (1, 2, 2, 2, 2)},
}


class UNet(PlainConvUNet):
    """nnU-Net's ``PlainConvUNet`` (same state-dict keys, so its weights load unchanged) that returns deep
    supervision in ``train()`` mode and one tensor in ``eval()``."""

    def train(self, mode: bool = True) -> UNet:
        super().train(mode)
        self.decoder.deep_supervision = mode
        return self

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        """``with_aux`` is ignored (no gate or experts), so that evaluation calls a U-Net and MoME alike."""
        return super().forward(x)


def build_unet(in_channels: int = 1, num_classes: int = 2, preset: str = "small") -> UNet:
    """One nnU-Net U-Net (3^3 kernels, 2 convs per stage, InstanceNorm, LeakyReLU 0.01, He init): an expert,
    the gate, or on its own a single-modality / universal baseline."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    shape = PRESETS[preset]
    net = UNet(
        input_channels=in_channels,
        n_stages=len(shape["features_per_stage"]),
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
        if first is None or last is None or stage.format(len(widths)) in state_dict:
            continue
        if (first.shape[0], last.shape[0]) == (widths[0], widths[-1]):
            return name
    raise ValueError("state dict matches no MoME preset (" + ", ".join(PRESETS) + ")")


class MoME(nn.Module):
    """K modality experts fused voxel-wise by a hierarchical gate: one expert per entry of ``modalities``, in that
    order (the loss routes samples by index into it); ``num_classes`` includes the background.

    ``gate_activation=None`` keeps the gate's raw weights (as published, needed for official weights); ``"softmax"``
    normalises them over experts, per class and voxel. ``dropout``: channel dropout on every encoder skip, off in
    ``eval()`` unless a caller switches the ``nn.Dropout3d`` modules back to train mode (MC-dropout).

    ``train()`` returns ``{"fused": [levels], "experts": [[levels] per expert]}``, highest resolution first.
    ``eval()`` returns the fused logits, or with ``with_aux=True`` a dict adding the gate weights and expert logits
    (``B, K*C, ...``), all at input resolution."""

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
        self.stride = preset_stride(preset)  # checks the preset
        if gate_activation not in (None, "softmax"):
            raise ValueError(f"gate_activation must be None or 'softmax', got {gate_activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.modalities = tuple(modalities)
        if len(self.modalities) < 1:
            raise ValueError("MoME needs at least one expert modality")
        self.num_classes, self.in_channels, self.gate_activation = num_classes, in_channels, gate_activation
        k = len(self.modalities)
        self.experts = nn.ModuleList(build_unet(in_channels, num_classes, preset) for _ in range(k))
        self.gate = self._build_gate(preset)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.train()

    def _build_gate(self, preset: str) -> UNet:
        """The gating U-Net: the image and every expert's first encoder stage in, K*C weights out."""
        k, stem = len(self.modalities), PRESETS[preset]["features_per_stage"][0]
        return build_unet(self.in_channels + k * stem, k * self.num_classes, preset)

    @property
    def num_levels(self) -> int:
        """Deep-supervision levels (one per decoder stage)."""
        return len(self.gate.decoder.stages)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"MoME expects a (batch, {self.in_channels}, D, H, W) image, got shape {tuple(x.shape)}")
        if any(s % self.stride for s in x.shape[2:]):
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
        """The training forward at full resolution, holding one expert's features at a time: the gate's first conv
        is linear in its inputs, so ``conv(cat(x, F_1..F_K))`` is accumulated as ``conv_x(x) + sum_k conv_k(F_k)``
        after each expert's encoder; the ``1 + K*features`` channel gate input is never built."""
        block = self.gate.encoder.stages[0][0]  # stage 0 of the gate: its StackedConvBlocks (no pooling)
        first, c = block.convs[0], self.in_channels
        gconv = first.conv
        conv = functools.partial(F.conv3d, stride=gconv.stride, padding=gconv.padding, dilation=gconv.dilation)
        acc = conv(x, gconv.weight[:, :c], gconv.bias)
        logits = []
        for expert in self.experts:
            skips = expert.encoder(x)
            width = skips[0].shape[1]
            acc.add_(conv(skips[0], gconv.weight[:, c : c + width]))
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
        return {"logits": fused, "gate": weights, "experts": torch.cat(logits, dim=1)} if with_aux else fused
