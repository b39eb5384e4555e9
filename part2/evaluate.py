"""Score a GAN with the repository's digit classifier: FID on classifier features, IS, mode coverage.

    python part2/evaluate.py RUN_DIR   # generator_{start,half,end}.pt + real floor -> RUN_DIR/scores.json
    python part2/evaluate.py FILE.pt   # one generator file or my_gan.py checkpoint -> FILE_scores.json

Why our own classifier: the usual Inception-based FID needs Inception-v3 weights
downloaded from the internet and was made for natural colour photographs, not
28x28 digits; a small CNN trained on MNIST by this repository (classifier.py,
train_classifier.py) scores offline in feature and label spaces that describe digits.
Generated samples and 10,000 real training images (the floor) are both compared
with the 10,000 MNIST test images.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from classifier import DEFAULT_CLASSIFIER, FEATURE_DIM, N_CLASSES, DigitClassifier, classify, load_classifier
from cs324_utils import (
    OneLineParser,
    UserError,
    check_fits,
    check_seed,
    check_writable_dir,
    pick_device,
    refuse_replacing,
    repo_relative,
    run_cli,
    write_json,
)
from mnist_data import load_mnist
from models import IMG_PIXELS, load_generator
from sampling import generate, latents
from scores import CONFIDENCE, all_scores, feature_stats

HERE = Path(__file__).resolve().parent
PROG = "evaluate.py"

STAGES = ("start", "half", "end")
IS_SPLITS = 10
# float32 image and a latent of up to 1024 dims, float64 features and probabilities: what one sample holds
SAMPLE_BYTES = 4 * (IMG_PIXELS + 1024) + 8 * (FEATURE_DIM + N_CLASSES)


def check_sampling(n_samples: int, seed: int) -> None:
    """Refuse a sample count that gives no covariance or cannot fit in memory, and a seed numpy cannot take."""
    if n_samples < IS_SPLITS:
        raise UserError(f"--n_samples must be >= {IS_SPLITS} (the Inception Score's splits), got {n_samples}")
    check_fits(n_samples * SAMPLE_BYTES, f"--n_samples {n_samples}")
    check_seed(seed)


def score_generator(generator: torch.nn.Module, classifier: DigitClassifier, ref_mu: torch.Tensor,
                    ref_sigma: torch.Tensor, n_samples: int = 10000, seed: int = 0) -> dict:
    """Scores of n_samples seeded samples (the same z for every generator with this seed)."""
    z = latents(n_samples, generator.latent_dim, seed)
    feats, probs = classify(classifier, generate(generator, z))
    return all_scores(feats, probs, ref_mu, ref_sigma, CONFIDENCE, IS_SPLITS)


def score_real(train_images: torch.Tensor, classifier: DigitClassifier, ref_mu: torch.Tensor,
               ref_sigma: torch.Tensor, n_samples: int = 10000, seed: int = 0) -> dict:
    """The floor: the same scores for n_samples random real training images."""
    n = min(n_samples, train_images.shape[0])
    idx = torch.randperm(train_images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    feats, probs = classify(classifier, train_images[idx])
    return all_scores(feats, probs, ref_mu, ref_sigma, CONFIDENCE, IS_SPLITS)


def score_generators(paths: dict[str, Path], data_dir: str | Path, classifier_path: str | Path | None = None,
                     device: str | torch.device = "cpu", n_samples: int = 10000, seed: int = 0,
                     download: bool = True) -> dict:
    """{name: scores} for each generator file, plus "real" (the floor) and "meta"."""
    check_sampling(n_samples, seed)
    device = device if isinstance(device, torch.device) else pick_device(device)
    begin = time.time()
    # Load every file before the data, so a bad path fails in the first second.
    generators = {name: load_generator(path, device) for name, path in paths.items()}
    classifier = load_classifier(classifier_path, device)
    test_images, _ = load_mnist(data_dir, train=False, download=download)
    train_images, _ = load_mnist(data_dir, train=True, download=download)

    ref_feats, _ = classify(classifier, test_images)
    ref_mu, ref_sigma = feature_stats(ref_feats)
    result = {name: score_generator(g, classifier, ref_mu, ref_sigma, n_samples, seed) for name, g in generators.items()}
    result["real"] = score_real(train_images, classifier, ref_mu, ref_sigma, n_samples, seed)
    result["meta"] = {
        "generators": {name: repo_relative(path) for name, path in paths.items()},
        "classifier": repo_relative(classifier_path or DEFAULT_CLASSIFIER),
        "classifier_test_accuracy": classifier.info.get("test_accuracy"),  # checked by load_classifier
        "reference": f"{test_images.shape[0]} MNIST test images",
        "real": f"{result['real']['n']} random MNIST training images (seed {seed})",
        "data_dir": str(data_dir),
        "n_samples": n_samples,
        "seed": seed,
        "feature_dim": FEATURE_DIM,
        "confidence_threshold": CONFIDENCE,
        "inception_score_splits": IS_SPLITS,
        "fid": "Frechet distance between Gaussians fitted to the classifier's penultimate-layer features",
        "kl_from_uniform": "KL(predicted-class histogram || uniform) in nats; 0 = every digit equally often, 2.30 = one digit only",
        "seconds": round(time.time() - begin, 1),
    }
    return result


def score_run(run_dir: str | Path, data_dir: str | Path, classifier_path: str | Path | None = None,
              device: str | torch.device = "cpu", n_samples: int = 10000, seed: int = 0,
              download: bool = True) -> dict:
    """Score generator_{start,half,end}.pt of a my_gan.py run folder plus the real floor; write run_dir/scores.json.

    Stages whose file is missing (a run stopped early) are skipped and listed in meta["missing"].
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    paths = {s: run_dir / f"generator_{s}.pt" for s in STAGES if (run_dir / f"generator_{s}.pt").is_file()}
    if not paths:
        raise UserError(f"{run_dir} holds none of generator_start.pt, generator_half.pt, generator_end.pt")
    check_writable_dir(run_dir, "run folder")  # before minutes of scoring, not after
    result = score_generators(paths, data_dir, classifier_path, device, n_samples, seed, download)
    result["meta"]["missing"] = [s for s in STAGES if s not in paths]
    write_json(result, run_dir / "scores.json")
    return result


def format_table(result: dict) -> str:
    """One line per scored set, for the terminal."""
    lines = [f"{'':10s} {'FID':>9s} {'IS':>6s} {'KL(unif)':>9s} {'conf>=' + str(CONFIDENCE):>9s}  class histogram (%, 0..9)"]
    for name, s in result.items():
        if name == "meta":
            continue
        hist = " ".join(f"{100 * v:4.1f}" for v in s["class_histogram"])
        lines.append(f"{name:10s} {s['fid']:9.3f} {s['inception_score']:6.3f} {s['kl_from_uniform']:9.4f} "
                     f"{s['confident_fraction']:9.4f}  {hist}")
    return "\n".join(lines)


def output_path(target: Path, out: str | None) -> Path:
    """Where the scores go: --out, else RUN_DIR/scores.json or FILE_scores.json (nothing is created here)."""
    if out is None:
        return target / "scores.json" if target.is_dir() else target.with_name(f"{target.stem}_scores.json")
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give a file path such as {path / 'scores.json'}")
    if path.suffix != ".json":  # so a slip of the keyboard cannot write JSON over a generator file
        raise UserError(f"--out must name a .json file, got {path}")
    return path


def evaluate(args: argparse.Namespace) -> None:
    """Score a run folder (which gets scores.json) or one generator file; print the table and where it went."""
    check_sampling(args.n_samples, args.seed)
    device = pick_device(args.device)
    target = Path(args.target)
    if not target.exists():
        raise UserError(f"not found: {target} (give a my_gan.py run folder or a generator .pt file)")
    out = output_path(target, args.out)
    for path in {out, target / "scores.json"} if target.is_dir() else {out}:
        refuse_replacing(path, args.overwrite)  # before the probe below, which creates the folder
    check_writable_dir(out.parent, "--out" if args.out is not None else "output folder")  # before minutes of work
    if target.is_dir():  # score_run writes RUN_DIR/scores.json itself
        result = score_run(target, args.data_dir, args.classifier, device, args.n_samples, args.seed, args.download)
    else:
        result = score_generators({"generator": target}, args.data_dir, args.classifier, device,
                                  args.n_samples, args.seed, args.download)
    written = [target / "scores.json"] if target.is_dir() else []
    if out not in written:
        write_json(result, out)
        written.append(out)
    print(format_table(result))
    print("wrote " + " and ".join(str(p) for p in written))


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("target", help="a run folder of my_gan.py, or one generator file / checkpoint (.pt)")
    p.add_argument("--data_dir", default=str(HERE / "data"), help="folder holding MNIST/raw (default: part2/data)")
    p.add_argument("--no_download", dest="download", action="store_false",
                   help="never try to download MNIST (default: download when missing)")
    p.add_argument("--classifier", default=None, help="classifier weights (default: part2/results/classifier.pt)")
    p.add_argument("--n_samples", type=int, default=10000, help="generated and real samples scored (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and of the real subset (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the JSON here (default: RUN_DIR/scores.json, or FILE_scores.json next to FILE)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace score files that exist; needed to write into part2/results")
    args = p.parse_args(argv)
    run_cli(PROG, lambda: evaluate(args))


if __name__ == "__main__":
    main()
