"""The paper's figure 2b: what the gate sees. One bottleneck feature vector per image, embedded with t-SNE.

MoME's gate must tell sequences apart with no sequence label, so its bottleneck features should cluster by sequence
(and less by lesion type); a universal U-Net, which never needs to know the sequence, has no such pressure. The
feature of an image is the spatial mean of the deepest encoder stage's output (the gate's for MoME, the encoder's
for a U-Net), averaged over sliding windows; the evaluation collects it with a forward hook (no second pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from scripts.atomic import atomic_path


def bottleneck(network: torch.nn.Module) -> torch.nn.Module:
    """The deepest encoder stage: of the gate for MoME, of the network for one U-Net (DDP/compile wrappers off)."""
    net = getattr(network, "module", network)
    net = getattr(net, "_orig_mod", net)
    owner = net.gate if hasattr(net, "gate") else net
    return owner.encoder.stages[-1]


class BottleneckFeatures:
    """Evaluator handler: one feature vector per image (batch size 1), saved with the images' sequence and lesion
    type as ``bottleneck_features.npz``, and a t-SNE of them as ``tsne.png``, when the evaluator completes."""

    def __init__(self, network: torch.nn.Module, output_dir: str | Path, items: Sequence[Mapping], name: str = "MoME"):
        self.network, self.output_dir, self.items, self.name = network, Path(output_dir), list(items), name
        self.windows: list[torch.Tensor] = []
        self.features: dict[str, np.ndarray] = {}

    def attach(self, engine: Engine) -> None:
        bottleneck(self.network).register_forward_hook(self._hook)
        engine.add_event_handler(Events.STARTED, lambda _: self.features.clear())
        engine.add_event_handler(Events.ITERATION_STARTED, lambda _: self.windows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _hook(self, module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        if not module.training:
            self.windows.append(output.detach().float().mean(dim=tuple(range(2, output.ndim))).cpu())

    def collect(self, engine: Engine) -> None:
        if not self.windows:
            return
        item = engine.state.output[0]  # decollated; the evaluation runs one image per batch
        name = str(Path(str(item["image"].meta["filename_or_obj"])).resolve())
        self.features[name] = torch.cat(self.windows).mean(0).numpy()

    def write(self, engine: Engine) -> None:
        keys = [str(Path(i["image"]).resolve()) for i in self.items if str(Path(i["image"]).resolve()) in self.features]
        items = {str(Path(i["image"]).resolve()): i for i in self.items}
        features = np.stack([self.features[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        modality = np.array([items[k].get("modality") or "unknown" for k in keys])
        lesion = np.array([items[k].get("lesion_type") or "unknown" for k in keys])
        path = self.output_dir / "bottleneck_features.npz"
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, features=features, image=np.array(keys), modality=modality, lesion_type=lesion)
        if len(keys) >= 3:
            tsne_figure({self.name: (features, modality, lesion)}, self.output_dir / "tsne.png")


def embed(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of standardised features; perplexity shrinks with few images, as t-SNE needs."""
    from sklearn.manifold import TSNE

    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def tsne_figure(series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path) -> None:
    """One column per model, coloured by sequence (top) and by lesion type (bottom)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5 * len(series), 8))
    axes = fig.subplots(2, len(series), squeeze=False)
    for col, (name, (features, modality, lesion)) in enumerate(series.items()):
        xy = embed(features)
        for row, (what, labels) in enumerate((("sequence", modality), ("lesion type", lesion))):
            ax = axes[row][col]
            for label in sorted(set(labels.tolist())):
                pick = labels == label
                ax.scatter(xy[pick, 0], xy[pick, 1], s=14, label=label)
            ax.set(title=f"{name}: by {what}", xticks=[], yticks=[])
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
