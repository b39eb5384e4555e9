"""Train the digit classifier that scores GAN samples (classifier.py); writes weights and a JSON of its accuracy.

    python part2/train_classifier.py --data_dir ../shared/mnist     # -> part2/runs/classifier/classifier.{pt,json}
    python part2/train_classifier.py --data_dir ../shared/mnist --out part2/results/classifier.pt --overwrite
                                                                    # remakes the committed judge, by name

An existing --out (or its .json) is replaced only with --overwrite. A classifier whose weights are not
all finite, or whose test accuracy is below --min_accuracy, is never saved.
Exit codes: 0 saved; 2 bad input, one line on stderr, nothing trained; 1 training failed, one line, nothing saved.
"""
from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from classifier import DigitClassifier, classify, save_classifier
from cs324_utils import (
    OneLineParser,
    TrainingFailed,
    UserError,
    all_finite,
    check_seed,
    check_writable_dir,
    pick_device,
    refuse_replacing,
    repo_relative,
    run_cli,
    set_seed,
    write_json,
)
from mnist_data import load_mnist

HERE = Path(__file__).resolve().parent
PROG = "train_classifier.py"

SMOKE_IMAGES = 2048   # training images of --smoke
MIN_ACCURACY = 0.9    # a judge below this on the MNIST test set is broken, not merely weak
DEFAULTS = {
    "data_dir": str(HERE / "data"),
    "out": None,  # default_out(smoke): under part2/runs/, never the committed part2/results/classifier.pt
    "overwrite": False,
    "epochs": 4,
    "batch_size": 256,
    "lr": 3e-3,
    "shift": 2,
    "seed": 0,
    "device": "auto",
    "download": True,
    "smoke": False,
    "min_accuracy": None,  # MIN_ACCURACY, or 0 with --smoke (2048 images make no judge)
}


def default_out(smoke: bool) -> Path:
    return HERE / "runs" / ("classifier_smoke" if smoke else "classifier") / "classifier.pt"


def validate(config: dict) -> None:
    """Stop at the door with one line naming the flag; fills in the defaults that depend on --smoke."""
    if config["epochs"] < 1:
        raise UserError(f"--epochs must be >= 1, got {config['epochs']}")
    if config["batch_size"] < 2:
        raise UserError(f"--batch_size must be >= 2 (BatchNorm needs a batch), got {config['batch_size']}")
    if config["smoke"] and config["batch_size"] > SMOKE_IMAGES:
        raise UserError(f"--batch_size {config['batch_size']} is larger than the {SMOKE_IMAGES} training images "
                        f"of --smoke; use at most {SMOKE_IMAGES}")
    if not (math.isfinite(config["lr"]) and config["lr"] > 0):
        raise UserError(f"--lr must be a finite number > 0, got {config['lr']}")
    if not 0 <= config["shift"] <= 6:
        raise UserError(f"--shift must be in 0..6 pixels, got {config['shift']}")
    check_seed(config["seed"])
    if config["min_accuracy"] is None:
        config["min_accuracy"] = 0.0 if config["smoke"] else MIN_ACCURACY
    if not 0 <= config["min_accuracy"] <= 1:  # NaN fails this too
        raise UserError(f"--min_accuracy must be in [0, 1], got {config['min_accuracy']}")
    if config["out"] is None:
        config["out"] = str(default_out(config["smoke"]))


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse, before any training, an output that is not a .pt file path, that exists or lies in the committed
    results (without --overwrite), or that cannot be written."""
    if out.suffix != ".pt":
        raise UserError(f"--out must name a .pt file (its .json is written beside it), got {out}")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file path such as {out / 'classifier.pt'}")
    for path in (out, out.with_suffix(".json")):
        refuse_replacing(path, overwrite)
    check_writable_dir(out.parent, "--out")


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
    return (probs.argmax(1) == labels.cpu()).double().mean().item()


def load_data(config: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    """x_train, y_train on the device; x_test, y_test on the CPU (classify moves them in batches)."""
    x_train, y_train = load_mnist(config["data_dir"], train=True, download=config["download"])
    x_test, y_test = load_mnist(config["data_dir"], train=False, download=config["download"])
    if config["smoke"]:
        x_train, y_train = x_train[:SMOKE_IMAGES], y_train[:SMOKE_IMAGES]
    if config["batch_size"] > x_train.shape[0]:
        raise UserError(f"--batch_size {config['batch_size']} is larger than the {x_train.shape[0]} training images")
    return x_train.to(device), y_train.to(device), x_test, y_test


def fit(config: dict, data: tuple[torch.Tensor, ...], device: torch.device) -> tuple[DigitClassifier, float]:
    """AdamW with a one-cycle schedule over shuffled index batches (no DataLoader); returns the model and test accuracy."""
    x_train, y_train, x_test, y_test = data
    gen = torch.Generator().manual_seed(config["seed"])  # the data order and shifts draw from their own RNG
    model = DigitClassifier().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    bs = config["batch_size"]
    steps_per_epoch = x_train.shape[0] // bs  # drop the last partial batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config["lr"], total_steps=config["epochs"] * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    start = time.time()
    for epoch in range(config["epochs"]):
        model.train()
        perm = torch.randperm(x_train.shape[0], generator=gen).to(device)
        for step in range(steps_per_epoch):
            idx = perm[step * bs:(step + 1) * bs]
            loss = loss_fn(model(random_shift(x_train[idx], config["shift"], gen)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if not math.isfinite(loss.item()):  # one host sync per epoch
            raise TrainingFailed(f"the loss became {loss.item()} in epoch {epoch + 1}; nothing saved (try a lower --lr)")
        acc = accuracy(model, x_test, y_test)
        print(f"epoch {epoch + 1}/{config['epochs']}  loss {loss.item():.4f}  test accuracy {acc:.4f}  "
              f"({time.time() - start:.0f} s)", flush=True)
    return model.cpu(), acc


def check_trained(model: DigitClassifier, acc: float, min_accuracy: float) -> None:
    """The judge is saved only if every weight is finite and it classifies the test set well enough."""
    if not all_finite(model.state_dict()):
        raise TrainingFailed("the classifier's weights are not all finite; nothing saved (try a lower --lr)")
    if acc < min_accuracy:
        raise TrainingFailed(f"test accuracy {acc:.4f} is below --min_accuracy {min_accuracy}; nothing saved")


def train(config: dict) -> dict:
    """Validate, train, check and save; return the info saved with the weights (and as JSON beside them)."""
    config = {**DEFAULTS, **config}
    validate(config)
    device = pick_device(config["device"])
    out = Path(config["out"])
    check_output(out, config["overwrite"])
    set_seed(config["seed"])
    data = load_data(config, device)
    start = time.time()
    model, acc = fit(config, data, device)
    check_trained(model, acc, config["min_accuracy"])
    info = {
        "test_accuracy": acc,
        "train_seconds": round(time.time() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "command": config.get("command", ""),
        "config": {k: v for k, v in config.items() if k != "command"} | {"out": repo_relative(out)},
    }
    save_classifier(model, out, info)
    write_json(info, out.with_suffix(".json"))
    print(f"saved {out} and {out.with_suffix('.json')}")
    return info


def parse_args(argv: list[str] | None = None) -> dict:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default=DEFAULTS["data_dir"], help="folder holding MNIST/raw (default: part2/data)")
    p.add_argument("--no_download", dest="download", action="store_false",
                   help="never try to download MNIST (default: download when missing)")
    p.add_argument("--out", default=None, help="weights file, .pt; its .json goes beside it "
                   "(default: part2/runs/classifier/classifier.pt, or classifier_smoke/ with --smoke)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out and its .json; needed to write into part2/results")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="default: %(default)s")
    p.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"], help="default: %(default)s")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak one-cycle learning rate (default: %(default)s)")
    p.add_argument("--shift", type=int, default=DEFAULTS["shift"], help="max random shift in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="default: %(default)s")
    p.add_argument("--device", default=DEFAULTS["device"], help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help=f"seconds-long check: {SMOKE_IMAGES} training images")
    p.add_argument("--min_accuracy", type=float, default=None,
                   help=f"save only if the test accuracy reaches this (default: {MIN_ACCURACY}, 0 with --smoke)")
    config = vars(p.parse_args(argv))
    args = sys.argv[1:] if argv is None else argv
    config["command"] = shlex.join(["python", repo_relative(__file__), *args])
    return config


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)

    run_cli(PROG, lambda: train(config))  # a TrainingFailed is one line and exit code 1


if __name__ == "__main__":
    main()
