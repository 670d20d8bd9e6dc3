"""The pinned environment imports what the server side and the bundle need, with no stubbed modules."""

from __future__ import annotations

import importlib

import pytest
import torch


@pytest.mark.parametrize(
    "module",
    [
        "monailabel",
        "monailabel.tasks.infer.bundle",
        "monailabel.tasks.train.bundle",
        "monai.bundle",
        "ignite",
        "dynamic_network_architectures.architectures.unet",
        "nilearn.datasets",
        "itk",
        "nibabel",
    ],
)
def test_import(module: str) -> None:
    assert importlib.import_module(module).__file__


def test_torchvision_matches_torch() -> None:
    import torchvision

    # a compiled torchvision operator only runs when torch and torchvision are a matching pair
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]
