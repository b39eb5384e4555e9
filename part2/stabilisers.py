"""The four stabilisers my_gan.py adds to the template's recipe; report.md measures each.

    dropout in D                       models.Discriminator(dropout)          --d_dropout
    one-sided label smoothing          my_gan.train_step(real_label=1 - s)    --label_smoothing
    a moving average of G's weights    WeightAverage, below                   --ema
    learning-rate decay                lr_at, below                           --lr_decay

`--d_dropout 0 --label_smoothing 0 --ema 0 --lr_decay none` is the plain template recipe.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

BN_REFRESH_BATCHES, BN_REFRESH_SIZE = 4, 512  # latents that set the averaged generator's BatchNorm statistics


def lr_at(lr: float, schedule: str, iteration: int, total: int) -> float:
    """The learning rate of both networks for the update after `iteration` of `total` updates.

    "linear": constant for the first half, then linearly down to zero (as in CycleGAN): small late
    steps let both networks settle instead of chasing each other at full step size. "none": constant.
    """
    if schedule == "none":
        return lr
    return lr * min(1.0, 2.0 * (1.0 - iteration / total))


class WeightAverage:
    """An exponential moving average of G's weights, which grids and saved generators show (decay 0: off).

    G's weights wander around a good solution as D keeps moving; their average lands nearer its
    centre, which gives sharper, more varied samples (Yazici et al., 2019). Only parameters are
    averaged; the BatchNorm statistics are recomputed for the averaged weights (refresh_bn_stats).
    """

    def __init__(self, generator: nn.Module, decay: float, seed: int = 0) -> None:
        self.live, self.decay, self.seed = generator, decay, seed
        self.model = None if decay == 0 else copy.deepcopy(generator).requires_grad_(False)

    @torch.no_grad()
    def update(self, first: bool = False) -> None:
        """average <- decay * average + (1 - decay) * G, every parameter in one call; the first update copies G.

        The same arithmetic as torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn (a test
        checks they agree bit for bit), without its per-parameter Python loop.
        """
        if self.model is None:
            return
        averages, live = list(self.model.parameters()), list(self.live.parameters())
        if first:
            torch._foreach_copy_(averages, live)
        else:
            torch._foreach_lerp_(averages, live, 1 - self.decay)  # lerp_ per tensor, in one call

    def sampler(self) -> nn.Module:
        """The generator to sample from: the average (its BatchNorm statistics refreshed), or G when off."""
        return self.live if self.model is None else refresh_bn_stats(self.model, self.seed)


@torch.no_grad()
def refresh_bn_stats(generator: nn.Module, seed: int = 0) -> nn.Module:
    """Set G's BatchNorm running statistics from its own activations on fixed latents; returns G in eval mode.

    Statistics kept during training belong to the live weights, not to an average of them.
    The latents come from their own seeded generator, so training's random stream is untouched.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm1d)]
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    momenta = [m.momentum for m in norms]
    generator.train()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    for _ in range(BN_REFRESH_BATCHES):
        generator(torch.randn(BN_REFRESH_SIZE, generator.latent_dim, generator=gen).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return generator.eval()
