"""Sample-quality scores from a digit classifier's outputs: Frechet distance, Inception Score, mode coverage.

Why our own classifier: the usual Inception-based FID needs Inception-v3 weights
downloaded from the internet and was made for natural colour photographs; on
MNIST we use the penultimate layer (128 features) and the softmax of a small CNN
that this repository trains (train_classifier.py), so every score works offline.
Numbers from it are comparable with each other, not with published FIDs.

All functions take float64 CPU tensors: features (N, D) and probabilities (N, 10).
"""
from __future__ import annotations

import math

import torch

CONFIDENCE = 0.9  # a sample is "confident" when its largest class probability is >= this
EPS = 1e-12       # keeps log(0) out of the KL terms


def feature_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    feats = feats.double()
    return feats.mean(0), torch.cov(feats.T)


def _sqrt_psd(mat: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh (scipy is not a dependency)."""
    vals, vecs = torch.linalg.eigh((mat + mat.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner matrix is symmetric PSD,
    so eigh gives it exactly, with no complex parts to discard as scipy.linalg.sqrtm would.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrt_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    dist = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return max(dist.item(), 0.0)  # rounding can leave -1e-12 for identical sets


def frechet_distance_feats(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b))


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` equal parts (the usual protocol).

    1 when every sample gets the same prediction; the number of classes (10) when each sample is
    classified with certainty and the classes are used equally often.
    """
    probs = probs.double()
    if not 1 <= splits <= probs.shape[0]:
        raise ValueError(f"splits must be in 1..{probs.shape[0]}, got {splits}")
    values = []
    for part in torch.tensor_split(probs, splits):
        marginal = part.mean(0, keepdim=True)  # p(y) within this split
        kl = (part * ((part + EPS).log() - (marginal + EPS).log())).sum(1)
        values.append(kl.mean().exp().item())
    vals = torch.tensor(values, dtype=torch.float64)
    return vals.mean().item(), (vals.std(correction=0).item() if splits > 1 else 0.0)


def class_histogram(probs: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose most probable class is each digit: (10,) summing to 1."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double()
    return counts / counts.sum()


def kl_from_uniform(hist: torch.Tensor) -> float:
    """KL(hist || uniform) in nats: 0 when all classes are equally frequent, log(10) = 2.30 for one class only."""
    hist = hist.double() / hist.sum()
    k = hist.shape[0]
    nz = hist > 0  # 0 * log 0 = 0
    return (hist[nz] * (hist[nz] * k).log()).sum().item()


def confident_fraction(probs: torch.Tensor, threshold: float = CONFIDENCE) -> float:
    """Fraction of samples whose largest class probability is >= threshold."""
    return (probs.max(1).values >= threshold).double().mean().item()


def all_scores(feats: torch.Tensor, probs: torch.Tensor, ref_mu: torch.Tensor, ref_sigma: torch.Tensor,
               threshold: float = CONFIDENCE, splits: int = 10) -> dict:
    """Every score of one sample set against reference feature statistics, as a JSON-ready dict."""
    hist = class_histogram(probs)
    is_mean, is_std = inception_score(probs, splits=min(splits, probs.shape[0]))
    return {
        "fid": frechet_distance(*feature_stats(feats), ref_mu, ref_sigma),
        "inception_score": is_mean,
        "inception_score_std": is_std,
        "class_histogram": [round(v, 6) for v in hist.tolist()],
        "kl_from_uniform": kl_from_uniform(hist),
        "confident_fraction": confident_fraction(probs, threshold),
        "n": int(probs.shape[0]),
    }


MAX_KL = math.log(10)  # KL from uniform of a generator that makes one digit only
