"""Tiny stand-ins for the part 2 evaluation tests: untrained generators, a confident classifier, a run folder."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from torchvision.utils import save_image

from classifier import FEATURE_DIM, N_CLASSES, DigitClassifier, classify, save_classifier
from models import Generator, save_generator
from sampling import generate, latents

LATENT_DIM = 16


def make_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(LATENT_DIM).eval()


def make_classifier(generator: Generator, path: Path, scale: float = 40.0) -> Path:
    """An untrained CNN whose head is set so that it sorts this generator's samples into all ten classes, confidently.

    The head reads the ten leading principal components of the features (whitened), so each class
    wins for about a tenth of the latents; the scale makes most winners exceed 0.9 probability.
    """
    torch.manual_seed(123)
    clf = DigitClassifier().eval()
    feats, _ = classify(clf, generate(generator, latents(500, generator.latent_dim, seed=0)))
    mu = feats.mean(0)
    vals, vecs = torch.linalg.eigh(torch.cov(feats.T))  # ascending
    top = vecs[:, -N_CLASSES:] / vals[-N_CLASSES:].clamp(min=1e-12).sqrt()  # (128, 10) whitening directions
    weight = scale * top.T  # (10, 128)
    with torch.no_grad():
        clf.head.weight.copy_(weight.float())
        clf.head.bias.copy_(-(weight @ mu).float())
    assert clf.head.weight.shape == (N_CLASSES, FEATURE_DIM)
    save_classifier(clf, path, {"test_accuracy": None, "command": "tests/part2_fakes.py"})
    return path


def make_run(run_dir: Path) -> Path:
    """A run folder in my_gan.py's layout: three untrained generators, grids, a short losses.csv."""
    (run_dir / "grids").mkdir(parents=True, exist_ok=True)
    # What my_gan.py records besides the settings: 2 epochs of 100 iterations, grid_half.png at 100.
    config = {"latent_dim": LATENT_DIM, "n_epochs": 2, "batch_size": 16, "n_train": 1600, "iterations_per_epoch": 100,
              "total_iterations": 200, "half_iteration": 100}
    (run_dir / "config.json").write_text(json.dumps(config) + "\n")
    fixed = latents(25, LATENT_DIM, seed=1)
    for i, stage in enumerate(("start", "half", "end")):
        g = make_generator(seed=i)
        save_generator(g, run_dir / f"generator_{stage}.pt", half=True)
        images = generate(g, fixed)
        save_image(images, run_dir / f"grid_{stage}.png", nrow=5, normalize=True, value_range=(-1, 1))
        save_image(images, run_dir / "grids" / f"iter_{i * 100:07d}.png", nrow=5, normalize=True, value_range=(-1, 1))
    with open(run_dir / "losses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "epoch", "loss_d", "loss_g", "d_real", "d_fake"])
        for it in range(0, 200, 10):
            w.writerow([it, it // 100, 1.3 - it / 400, 0.7 + it / 300, 0.5 + it / 1000, 0.5 - it / 1000])
    return run_dir


def make_run_and_classifier(root: Path) -> tuple[Path, Path]:
    """A tiny run folder (make_run) and a classifier that sorts its end generator's samples confidently."""
    from models import load_generator

    run = make_run(root / "run")
    return run, make_classifier(load_generator(run / "generator_end.pt"), root / "classifier.pt")
