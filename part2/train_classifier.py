"""Train the digit classifier that scores GAN samples (classifier.py); writes weights and a JSON of its accuracy.

    python part2/train_classifier.py --data_dir ../shared/mnist
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from classifier import DEFAULT_CLASSIFIER, DigitClassifier, classify, save_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import UserError, pick_device, repo_relative, set_seed, write_json
from mnist_data import load_mnist

HERE = Path(__file__).resolve().parent

DEFAULTS = {
    "data_dir": str(HERE / "data"),
    "out": str(DEFAULT_CLASSIFIER),
    "epochs": 4,
    "batch_size": 256,
    "lr": 3e-3,
    "shift": 2,
    "seed": 0,
    "device": "auto",
    "smoke": False,
}


def validate(config: dict) -> None:
    """Stop at the door with one line naming the flag."""
    if config["epochs"] < 1:
        raise UserError(f"--epochs must be >= 1, got {config['epochs']}")
    if config["batch_size"] < 2:
        raise UserError(f"--batch_size must be >= 2 (BatchNorm needs a batch), got {config['batch_size']}")
    if not config["lr"] > 0:
        raise UserError(f"--lr must be > 0, got {config['lr']}")
    if not 0 <= config["shift"] <= 6:
        raise UserError(f"--shift must be in 0..6 pixels, got {config['shift']}")


def random_shift(images: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by its own (dy, dx) in [-max_shift, max_shift], for the whole batch at once. (B,1,28,28)."""
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    side = h + 2 * max_shift
    padded = nn.functional.pad(images, (max_shift,) * 4, value=-1.0).view(b, side * side)  # -1 is the background
    offs = torch.randint(0, 2 * max_shift + 1, (2, b), generator=gen).to(images.device)
    window = (torch.arange(h, device=images.device)[:, None] * side + torch.arange(w, device=images.device)).view(1, -1)
    index = window + (offs[0] * side + offs[1])[:, None]  # (B, 784): top-left corner moved per image
    return padded.gather(1, index).view(b, 1, h, w)


def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    _, probs = classify(model, images)
    return (probs.argmax(1) == labels).double().mean().item()


def train(config: dict) -> dict:
    """Train on the whole training tensor (shuffled indices, no DataLoader); return the info saved with the weights."""
    config = {**DEFAULTS, **config}
    validate(config)
    set_seed(config["seed"])
    gen = torch.Generator().manual_seed(config["seed"])  # the data order and shifts draw from their own RNG
    device = pick_device(config["device"])

    x_train, y_train = load_mnist(config["data_dir"], train=True)
    x_test, y_test = load_mnist(config["data_dir"], train=False)
    if config["smoke"]:
        x_train, y_train = x_train[:2048], y_train[:2048]
    x_train, y_train = x_train.to(device), y_train.to(device)

    model = DigitClassifier().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    steps_per_epoch = x_train.shape[0] // config["batch_size"]  # drop the last partial batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config["lr"], total_steps=config["epochs"] * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()

    start = time.time()
    for epoch in range(config["epochs"]):
        model.train()
        perm = torch.randperm(x_train.shape[0], generator=gen).to(device)
        for step in range(steps_per_epoch):
            idx = perm[step * config["batch_size"]:(step + 1) * config["batch_size"]]
            x = random_shift(x_train[idx], config["shift"], gen)
            loss = loss_fn(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, x_test.to(device), y_test.to(device))
        print(f"epoch {epoch + 1}/{config['epochs']}  loss {loss.item():.4f}  test accuracy {acc:.4f}  "
              f"({time.time() - start:.0f} s)", flush=True)

    info = {
        "test_accuracy": acc,
        "train_seconds": round(time.time() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "command": config.get("command", ""),
        "config": {k: v for k, v in config.items() if k != "command"} | {"out": repo_relative(config["out"])},
    }
    save_classifier(model.cpu(), config["out"], info)
    json_path = Path(config["out"]).with_suffix(".json")
    write_json(info, json_path)
    print(f"saved {config['out']} and {json_path}")
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default=DEFAULTS["data_dir"], help="folder holding MNIST/raw (default: part2/data)")
    p.add_argument("--out", default=DEFAULTS["out"], help="weights file (default: part2/results/classifier.pt)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="default: %(default)s")
    p.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"], help="default: %(default)s")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak one-cycle learning rate (default: %(default)s)")
    p.add_argument("--shift", type=int, default=DEFAULTS["shift"], help="max random shift in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="default: %(default)s")
    p.add_argument("--device", default=DEFAULTS["device"], help="auto, cpu, cuda or mps (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="seconds-long check: 2048 training images")
    config = vars(p.parse_args())
    script = repo_relative(sys.argv[0])  # as run from the repo root
    config["command"] = "python " + " ".join(shlex.quote(str(a)) for a in [script, *sys.argv[1:]])
    try:
        train(config)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
