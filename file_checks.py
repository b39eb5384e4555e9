"""Reading back what the scripts wrote: each field checked where it is read, one line when it is wrong.

A checkpoint, a JSON file or losses.csv can be damaged, hand-edited, or written by another version
of the code. Every loader reads through `Fields`, which hands out a loaded dictionary's fields
checked for type, range, shape and finiteness; a failed check is a UserError that names the file
and the field, which the scripts print as one line (exit 2).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from cs324_utils import UserError, safe_load

_MISSING = object()
# What an optimiser's state must hold for each weight once it has stepped, and its hyper-parameters.
STATE_KEYS = {"Adam": ("step", "exp_avg", "exp_avg_sq"), "RMSprop": ("step", "square_avg")}
HYPER = ("lr", "eps", "weight_decay", "alpha", "momentum", "betas")


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, torch.Tensor) else f"a tensor of shape {tuple(value.shape)}"
    return text if len(text) <= 40 else text[:37] + "..."


class Fields:
    """A dictionary read from `path`; each accessor returns one field, checked, or raises a one-line UserError."""

    def __init__(self, obj: Any, path: str | Path, where: str = "") -> None:
        self.path, self.where = Path(path), where
        if not isinstance(obj, dict):
            raise UserError(f"{self.path}: {where or 'the file'} must be a dictionary, not {type(obj).__name__}")
        self.obj = obj

    def error(self, key: str, problem: str) -> UserError:
        return UserError(f"{self.path}: field {self.where}{key!r} {problem}")

    def has(self, key: str) -> bool:
        return key in self.obj

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.obj:
            if default is _MISSING:
                raise self.error(key, "is missing")
            return default
        return self.obj[key]

    def int(self, key: str, lo: int | None = None, hi: int | None = None, default: Any = _MISSING) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_shown(value)}")
        self._in_range(key, value, lo, hi)
        return value

    def number(self, key: str, lo: float | None = None, hi: float | None = None, default: Any = _MISSING) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"must be a finite number, not {_shown(value)}")
        self._in_range(key, value, lo, hi)
        return float(value)

    def str(self, key: str, choices: Sequence[str] | None = None, default: Any = _MISSING) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            wanted = f"one of {', '.join(choices)}" if choices is not None else "a string"
            raise self.error(key, f"must be {wanted}, not {_shown(value)}")
        return value

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_shown(value)}")
        return value

    def fields(self, key: str) -> Fields:
        """A nested dictionary, read the same way."""
        value = self.raw(key)
        if not isinstance(value, dict):
            self._wrong(key, "a dictionary")
        return Fields(value, self.path, f"{self.where}{key}.")

    def list(self, key: str, default: Any = _MISSING) -> list:
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, not {_shown(value)}")
        return value

    def records(self, key: str, default: Any = _MISSING) -> list[Fields]:
        """A list of dictionaries (a history), each read the same way."""
        items = self.list(key, default)
        bad = next((i for i, item in enumerate(items) if not isinstance(item, dict)), None)
        if bad is not None:
            raise self.error(f"{key}[{bad}]", f"must be a dictionary, not {_shown(items[bad])}")
        return [Fields(item, self.path, f"{self.where}{key}[{i}].") for i, item in enumerate(items)]

    def tensor(self, key: str, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A tensor of this shape and dtype (None: any); a floating-point one must be finite."""
        value = self.raw(key)
        if not isinstance(value, torch.Tensor):
            raise self.error(key, f"must be a tensor, not {_shown(value)}")
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise self.error(key, f"must have shape {tuple(shape)}, not {tuple(value.shape)}")
        if dtype is not None and value.dtype != dtype:
            raise self.error(key, f"must be {dtype}, not {value.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise self.error(key, "holds values that are not finite")
        return value

    def state_dict(self, key: str, module: nn.Module) -> dict[str, torch.Tensor]:
        """Weights for `module`: the same names and shapes, finite, floating point where the module's are."""
        state = self.fields(key)
        expected = module.state_dict()
        names = set(state.obj)
        if names != set(expected):
            odd = sorted(names ^ set(expected))[0]
            raise state.error(odd, "is missing" if odd in expected else "is not a weight of this model")
        for name, like in expected.items():
            value = state.tensor(name, tuple(like.shape))
            if value.is_floating_point() != like.is_floating_point():
                raise state.error(name, f"must be {like.dtype}, not {value.dtype}")
        return state.obj

    def optimizer_state(self, key: str, optimizer: torch.optim.Optimizer) -> dict:
        """An optimiser's state dict, loaded into `optimizer`: every tensor finite, each weight's moments of its
        shape and all there (STATE_KEYS), the hyper-parameters numbers."""
        state = self.fields(key)
        for sub in ("state", "param_groups"):
            state.raw(sub)
        bad = next((t for t in tensors_in(state.obj) if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:
            raise self.error(key, "holds values that are not finite")
        try:
            optimizer.load_state_dict(state.obj)
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            raise self.error(key, f"does not fit this model's optimiser ({type(exc).__name__})") from None
        wanted = STATE_KEYS.get(type(optimizer).__name__, ())
        for group in optimizer.param_groups:
            for name, value in group.items():
                numbers = value if name == "betas" else [value]
                if name in HYPER and not (isinstance(numbers, (list, tuple)) and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)):
                    raise self.error(key, f"has a {name} that is not a number ({_shown(value)})")
            for param in group["params"]:
                moments = optimizer.state.get(param, {})
                if moments and not set(wanted) <= set(moments):
                    raise self.error(key, f"lacks {', '.join(sorted(set(wanted) - set(moments)))} for a weight")
                for name, value in moments.items():
                    if name != "step" and (not isinstance(value, torch.Tensor) or value.shape != param.shape):
                        raise self.error(key, f"holds a {name} that is {_shown(value)}, not one of the weight's "
                                              f"shape {tuple(param.shape)}")
        return state.obj

    def _in_range(self, key: str, value: float, lo: float | None, hi: float | None) -> None:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"from {lo} to {hi}" if lo is not None and hi is not None else \
                (f">= {lo}" if lo is not None else f"<= {hi}")
            raise self.error(key, f"must be {bounds}, not {_shown(value)}")

    def _wrong(self, key: str, wanted: str) -> None:
        raise self.error(key, f"must be {wanted}, not {_shown(self.obj.get(key))}")


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor of a nested dict / list (a checkpoint, an optimiser state)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value)


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> Fields:
    """A torch file (weights_only=True) holding a dictionary, as Fields."""
    return Fields(safe_load(path, what), path)


def read_json(path: str | Path, what: str = "file") -> Fields:
    """A JSON file holding an object, as Fields; one line if it is missing, unreadable or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{what} {path} is not readable JSON ({type(exc).__name__})") from None
    return Fields(obj, path)


def read_csv(path: str | Path, header: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a CSV file written with `header`, as dicts (empty when the file is missing). A last row
    torn by a kill is left out; any other damage (binary content, another header, a bad row) is one line."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            lines = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable CSV file ({type(exc).__name__})") from None
    if not lines:
        return []
    if lines[0] != list(header):
        raise UserError(f"{path} does not start with the header {','.join(header)}")
    rows = [dict(zip(header, line)) for line in lines[1:]]
    for i, (line, row) in enumerate(zip(lines[1:], rows), start=2):
        if len(line) == len(header) and _numeric(row.values()):
            continue
        if i == len(lines):  # the last row, torn by a kill during its write
            return rows[:-1]
        raise UserError(f"{path}: line {i} is damaged ({','.join(line)[:40]!r})")
    return rows


def _numeric(values: Any) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False
