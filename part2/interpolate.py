"""Interpolate between two latents whose digits the classifier puts in different classes; save a labelled row.

    python part2/interpolate.py RUN_DIR_OR_GENERATOR [--from 3 --to 8] [--spherical] [--out FOLDER_OR_PNG]

The PNG goes to --out when it names a .png file, else into the --out folder (default: the generator's
folder) as interpolation_A_to_B.png, A and B the classes of the endpoints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from classifier import FEATURE_DIM, N_CLASSES, DigitClassifier, classify, load_classifier
from cs324_utils import (
    OneLineParser,
    UserError,
    atomic_write,
    check_fits,
    check_out,
    check_seed,
    check_writable_dir,
    pick_device,
    refuse_replacing,
    run_cli,
)
from models import IMG_PIXELS, load_generator
from sampling import generate, latents
from scores import CONFIDENCE

HERE = Path(__file__).resolve().parent
PROG = "interpolate.py"

N_IMAGES = 9          # 7 intermediate steps plus the two endpoints
MAX_IMAGES = 64       # one row of a figure; beyond this the images are too small to read
N_CANDIDATES = 2000   # latents searched at once for a confident pair
DEFAULT_RUN = HERE / "results" / "gan"


def check_sizes(n_images: int, n_candidates: int, latent_dim: int = 1024) -> None:
    """Refuse a path too short or too long to draw, and more candidates than memory holds."""
    if not 2 <= n_images <= MAX_IMAGES:
        raise UserError(f"--n_images must be from 2 (the two endpoints) to {MAX_IMAGES} (one readable row), "
                        f"got {n_images}")
    if n_candidates < 2:
        raise UserError(f"--candidates must be >= 2, got {n_candidates}")
    # a latent, an image and the classifier's float64 features and probabilities per candidate
    check_fits(n_candidates * (4 * (latent_dim + IMG_PIXELS) + 8 * (FEATURE_DIM + N_CLASSES)), f"--candidates {n_candidates}")


def check_digit(digit: int | None, flag: str) -> None:
    if digit is not None and not 0 <= digit <= 9:
        raise UserError(f"{flag} must be a digit 0..9, got {digit}")


def find_pair(generator: nn.Module, classifier: DigitClassifier, from_digit: int | None = None,
              to_digit: int | None = None, n_candidates: int = N_CANDIDATES, threshold: float = CONFIDENCE,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two latents (latent_dim,) whose samples are confidently of different classes (the named ones if given).

    All candidates are generated and classified in one batched pass; the first confident candidate
    of the wanted class is taken, so the choice is random but fixed by the seed.
    """
    check_digit(from_digit, "--from")
    check_digit(to_digit, "--to")
    if from_digit is not None and from_digit == to_digit:
        raise UserError(f"--from and --to must be different digits, both are {from_digit}")
    z = latents(n_candidates, generator.latent_dim, seed)  # (N, D)
    _, probs = classify(classifier, generate(generator, z))
    conf, label = probs.max(1)
    ok = conf >= threshold

    def first(digit: int | None, exclude: int | None) -> int:
        mask = ok.clone()
        if digit is not None:
            mask &= label == digit
        if exclude is not None:
            mask &= label != exclude
        hits = mask.nonzero().flatten()
        if hits.numel() == 0:
            wanted = f"a {digit}" if digit is not None else (
                f"a digit other than {exclude}" if exclude is not None else "any digit")
            raise UserError(f"none of {n_candidates} candidate latents (seed {seed}) gives {wanted} with confidence "
                            f">= {threshold}; try another --seed, more --candidates or a lower --threshold")
        return int(hits[0])

    i = first(from_digit, exclude=to_digit)  # a random start must leave room for a named end digit
    j = first(to_digit, exclude=int(label[i]))
    return z[i], z[j]


def interpolate(z0: torch.Tensor, z1: torch.Tensor, n_images: int = N_IMAGES, spherical: bool = False) -> torch.Tensor:
    """(n_images, D) latents from z0 to z1, endpoints included; linear, or slerp along the great circle."""
    t = torch.linspace(0, 1, n_images, dtype=z0.dtype)[:, None]  # (n, 1)
    if not spherical:
        return (1 - t) * z0 + t * z1
    cos = torch.dot(z0, z1) / (z0.norm() * z1.norm())
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def interpolation(generator: nn.Module, classifier: DigitClassifier, from_digit: int | None = None,
                  to_digit: int | None = None, n_images: int = N_IMAGES, spherical: bool = False,
                  n_candidates: int = N_CANDIDATES, threshold: float = CONFIDENCE, seed: int = 0) -> dict:
    """Images (n, 1, 28, 28), predicted labels (n,), confidences (n,) and latents (n, D) along the path."""
    check_sizes(n_images, n_candidates, generator.latent_dim)
    z0, z1 = find_pair(generator, classifier, from_digit, to_digit, n_candidates, threshold, seed)
    z = interpolate(z0, z1, n_images, spherical)
    images = generate(generator, z)
    _, probs = classify(classifier, images)
    conf, label = probs.max(1)
    return {"images": images, "labels": label, "confidences": conf.float(), "z": z, "spherical": spherical}


def plot_interpolation(result: dict, title: str | None = None) -> plt.Figure:
    """One row of images, each titled with the classifier's class and confidence."""
    n = result["images"].shape[0]
    fig, axes = plt.subplots(1, n, figsize=(1.3 * n, 1.9))
    for ax, img, lab, conf in zip(axes, result["images"], result["labels"], result["confidences"]):
        ax.imshow(img[0].numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{int(lab)} ({float(conf):.2f})", fontsize=10)
        ax.axis("off")
    kind = "spherical" if result["spherical"] else "linear"
    fig.suptitle(title or f"{kind} interpolation, classifier label (confidence)", fontsize=10)
    fig.tight_layout()
    return fig


def output_place(out: str | None, generator_path: Path) -> tuple[Path, str | None]:
    """(folder, file name or None) of the PNG; None means interpolation_A_to_B.png, named once A and B are known."""
    if out is None:
        return generator_path.parent, None
    path = Path(out)
    if path.is_dir() or path.suffix == "":
        return path, None
    if path.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file or a folder, got {path}")
    return path.parent, path.name


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before a model is loaded."""
    check_sizes(args.n_images, args.candidates)
    check_digit(args.from_digit, "--from")
    check_digit(args.to_digit, "--to")
    if not 0 < args.threshold < 1:  # NaN fails this too
        raise UserError(f"--threshold must be in (0, 1), got {args.threshold}")
    check_seed(args.seed)


def run(args: argparse.Namespace) -> Path:
    """Find the pair, draw the row, write the PNG atomically where --out says; return its path."""
    check_args(args)
    device = pick_device(args.device)
    path = Path(args.generator)
    path = path / "generator_end.pt" if path.is_dir() else path
    folder, name = output_place(args.out, path)
    check_out(folder, overwrite=args.overwrite)  # part2/results only when asked, before any work
    if name is not None:
        refuse_replacing(folder / name, args.overwrite)
    generator = load_generator(path, device)
    classifier = load_classifier(args.classifier, device)
    check_writable_dir(folder, "--out")
    result = interpolation(generator, classifier, args.from_digit, args.to_digit, args.n_images,
                           args.spherical, args.candidates, args.threshold, args.seed)
    out = folder / (name or f"interpolation_{int(result['labels'][0])}_to_{int(result['labels'][-1])}.png")
    refuse_replacing(out, args.overwrite)  # the name, known only now, may be an earlier row's
    fig = plot_interpolation(result)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
    labels = " ".join(f"{int(k)}({float(c):.2f})" for k, c in zip(result["labels"], result["confidences"]))
    print(f"{labels}\nwrote {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("generator", nargs="?", default=str(DEFAULT_RUN),
                   help="generator file, checkpoint, or run folder (uses generator_end.pt) (default: part2/results/gan)")
    p.add_argument("--classifier", default=None, help="classifier weights (default: part2/results/classifier.pt)")
    p.add_argument("--from", dest="from_digit", type=int, default=None, help="first digit (default: random)")
    p.add_argument("--to", dest="to_digit", type=int, default=None, help="last digit (default: random, != first)")
    p.add_argument("--spherical", action="store_true", help="slerp instead of a straight line")
    p.add_argument("--n_images", type=int, default=N_IMAGES,
                   help=f"images including endpoints, 2..{MAX_IMAGES} (default: %(default)s)")
    p.add_argument("--candidates", type=int, default=N_CANDIDATES, help="latents searched (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=CONFIDENCE, help="endpoint confidence (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--out", default=None, help="a .png file, or a folder that gets interpolation_A_to_B.png "
                   "(default: the generator's folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the PNG if it exists; needed to write into part2/results")
    args = p.parse_args(argv)
    run_cli(PROG, lambda: run(args))


if __name__ == "__main__":
    main()
