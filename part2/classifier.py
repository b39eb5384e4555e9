"""A small CNN digit classifier for MNIST, used to judge GAN samples offline.

Why our own classifier: the usual Inception-based FID needs Inception-v3 weights
downloaded from the internet and was made for 299x299 colour photographs, not
28x28 handwritten digits; a small CNN trained on MNIST by this repository
(train_classifier.py) works offline and its features describe digits.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cs324_utils import UserError, all_finite, atomic_save
from file_checks import read_checkpoint

HERE = Path(__file__).resolve().parent

DEFAULT_CLASSIFIER = HERE / "results" / "classifier.pt"
KIND = "digit_classifier"
N_CLASSES = 10
FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    """image (B, 1, 28, 28) in [-1, 1] -> logits (B, 10); features() gives the penultimate layer (B, 128)."""

    def __init__(self) -> None:
        super().__init__()

        def conv(n_in: int, n_out: int) -> list[nn.Module]:
            # Conv bias is redundant in front of BatchNorm.
            return [nn.Conv2d(n_in, n_out, 3, padding=1, bias=False), nn.BatchNorm2d(n_out), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(
            *conv(1, 16),   # (B, 16, 14, 14)
            *conv(16, 32),  # (B, 32, 7, 7)
            *conv(32, 64),  # (B, 64, 3, 3)
            nn.Flatten(),   # (B, 576)
            nn.Linear(64 * 3 * 3, FEATURE_DIM),
            nn.ReLU(),      # (B, 128): the feature space of the Frechet distance
        )
        self.head = nn.Linear(FEATURE_DIM, N_CLASSES)  # logits; CrossEntropyLoss applies the softmax

    def features(self, img: torch.Tensor) -> torch.Tensor:
        return self.body(img)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(img))


def save_classifier(model: DigitClassifier, path: str | Path, info: dict | None = None) -> None:
    """Save weights plus a small info dict (test accuracy, command) atomically; non-finite weights are refused."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if not all_finite(state):
        raise UserError(f"refusing to save {path}: the classifier's weights are not all finite")
    atomic_save({"kind": KIND, "state_dict": state, "info": dict(info or {})}, path)


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> DigitClassifier:
    """DigitClassifier in eval mode from a file of save_classifier (default: the committed results/classifier.pt);
    every field checked (a damaged or hand-edited file is one line naming the field)."""
    path = Path(path) if path is not None else DEFAULT_CLASSIFIER
    if not path.is_file():
        raise UserError(f"classifier file not found: {path} (make one with: python part2/train_classifier.py "
                        f"--out {path})")
    ckpt = read_checkpoint(path, "classifier file")
    if ckpt.raw("kind", None) != KIND:
        raise UserError(f"{path} is not a digit classifier file of this repository (made by train_classifier.py)")
    model = DigitClassifier()
    model.load_state_dict(ckpt.state_dict("state_dict", model))  # names, shapes, finite
    info = ckpt.fields("info") if ckpt.has("info") else None
    if info is not None and info.raw("test_accuracy", None) is not None:
        info.number("test_accuracy", 0, 1)  # it goes into scores.json's meta
    model.info = {} if info is None else info.obj  # type: ignore[attr-defined]  # kept for score metadata
    return model.to(device).eval()


@torch.no_grad()
def classify(model: DigitClassifier, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, 128) and class probabilities (N, 10), both float64 on the CPU, computed in batches."""
    was_training = model.training
    model.eval()  # BatchNorm must use its running statistics, not the batch's
    device = next(model.parameters()).device
    feats, probs = [], []
    for start in range(0, images.shape[0], batch_size):
        f = model.features(images[start:start + batch_size].to(device))
        feats.append(f.double().cpu())
        probs.append(torch.softmax(model.head(f), dim=1).double().cpu())
    model.train(was_training)
    return torch.cat(feats), torch.cat(probs)
