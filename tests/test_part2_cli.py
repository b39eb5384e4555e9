"""Part 2's evaluation, classifier, export and interpolation commands: work is never lost, bad input is one line.

The bad-input table runs each case as the user would, in its own process: exit code 2, exactly one
non-empty line on stderr naming the problem, no traceback.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import train_classifier
from classifier import DEFAULT_CLASSIFIER, load_classifier
from conftest import ROOT, write_fake_mnist
from part2_fakes import make_run_and_classifier

NO_CUDA = not torch.cuda.is_available()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- train_classifier.py: the committed judge changes only when named; a failed judge is never saved --------

def train_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """train_classifier.main(argv) in this process; exit code (0 when it returns) and stderr."""
    try:
        train_classifier.main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_default_output_is_not_the_committed_judge(fake_mnist: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """`train_classifier.py --smoke` writes under runs/, never over part2/results/classifier.pt."""
    committed = sha(DEFAULT_CLASSIFIER) if DEFAULT_CLASSIFIER.is_file() else None
    monkeypatch.setattr(train_classifier, "HERE", tmp_path)  # runs/ lands here, not in the repository
    code, err = train_cli(["--smoke", "--data_dir", str(fake_mnist), "--device", "cpu"], capsys)
    assert code == 0, err
    out = tmp_path / "runs" / "classifier_smoke" / "classifier.pt"
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert load_classifier(out).info["config"]["smoke"] is True
    assert (sha(DEFAULT_CLASSIFIER) if DEFAULT_CLASSIFIER.is_file() else None) == committed
    assert train_classifier.default_out(smoke=False) == tmp_path / "runs" / "classifier" / "classifier.pt"


def test_existing_classifier_needs_overwrite(fake_mnist: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "judge" / "classifier.pt"
    base = ["--smoke", "--data_dir", str(fake_mnist), "--device", "cpu", "--out", str(out)]
    assert train_cli(base, capsys)[0] == 0
    before = sha(out), sha(out.with_suffix(".json"))
    code, err = train_cli(base + ["--seed", "1"], capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (sha(out), sha(out.with_suffix(".json"))) == before
    out.unlink()  # the .json alone still marks an earlier result
    assert train_cli(base + ["--seed", "1"], capsys)[0] == 2
    assert train_cli(base + ["--seed", "1", "--overwrite"], capsys)[0] == 0
    assert load_classifier(out).info["config"]["seed"] == 1


@pytest.mark.parametrize("flags,needle", [
    (["--lr", "1e30"], "nothing saved"),               # the loss turns NaN: before, saved with exit 0
    (["--min_accuracy", "0.99"], "below --min_accuracy"),  # random labels: about 10% accuracy
])
def test_failed_classifier_is_not_saved(fake_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        flags: list[str], needle: str) -> None:
    out = tmp_path / "classifier.pt"
    base = ["--smoke", "--data_dir", str(fake_mnist), "--device", "cpu", "--out", str(out)]
    assert train_cli(base, capsys)[0] == 0
    before = sha(out), sha(out.with_suffix(".json"))
    code, err = train_cli(base + ["--overwrite"] + flags, capsys)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert (sha(out), sha(out.with_suffix(".json"))) == before  # the earlier judge is still there, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.json", "classifier.pt", "data"]


# --- bad input: one line, exit 2, in a process of its own -----------------------------------------------

def read_only_dir(tmp: Path) -> Path | None:
    """A folder no file can be created in, or None. root may write anywhere except a read-only mount such as /sys."""
    folder = Path("/sys")
    if os.geteuid() != 0:
        folder = tmp / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError:
        return folder


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The paths the table's {placeholders} stand for."""
    tmp = tmp_path_factory.mktemp("cli")
    run, clf = make_run_and_classifier(tmp)
    data = write_fake_mnist(tmp / "data")
    truncated = write_fake_mnist(tmp / "truncated")
    images = truncated / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    bad_magic = write_fake_mnist(tmp / "bad_magic")
    (bad_magic / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"this is not an IDX file")
    (tmp / "corrupt.pt").write_bytes(b"PK\x03\x04 half a zip")
    (tmp / "a_file").write_text("a file, not a folder\n")
    (tmp / "existing").mkdir()
    (tmp / "existing" / "keep.txt").write_text("an earlier export\n")
    read_only = read_only_dir(tmp)
    return {"tmp": str(tmp), "run": str(run), "gen": str(run / "generator_end.pt"), "clf": str(clf),
            "data": str(data), "truncated": str(truncated), "bad_magic": str(bad_magic),
            "corrupt": str(tmp / "corrupt.pt"), "file": str(tmp / "a_file"), "existing": str(tmp / "existing"),
            "ro": str(read_only or "")}


TC = "train_classifier.py"
TC_ARGS = "--smoke --device cpu --no_download --data_dir {data} --out {tmp}/tc/classifier.pt"
EV = "evaluate.py"
EV_ARGS = "{run} --classifier {clf} --data_dir {data} --no_download --device cpu --n_samples 100"
IN = "interpolate.py"
IN_ARGS = "{run} --classifier {clf} --device cpu --candidates 500"
EX = "export_run.py"

# (script, arguments, words the one line must hold)
CASES = [
    (TC, TC_ARGS + " --seed -1", "--seed"),
    (TC, TC_ARGS + " --lr inf", "--lr"),
    (TC, TC_ARGS + " --smoke --batch_size 4096", "--batch_size"),
    (TC, TC_ARGS + " --epochs two", "--epochs"),
    (TC, TC_ARGS + " --device tpu", "--device"),
    (TC, TC_ARGS + " --out {file}/classifier.pt", "--out"),
    (TC, TC_ARGS + " --out {ro}/classifier.pt", "cannot write"),
    (TC, TC_ARGS + " --out {tmp}/classifier.json", ".pt"),
    (TC, TC_ARGS + " --data_dir {truncated}", "train-images-idx3-ubyte is damaged"),
    (TC, TC_ARGS + " --data_dir {tmp}/no_mnist", "not found and downloading is off"),
    (EV, EV_ARGS + " --seed 4294967296", "--seed"),
    (EV, EV_ARGS + " --device tpu", "--device"),
    (EV, EV_ARGS + " --n_samples 1", "--n_samples"),
    (EV, EV_ARGS + " --n_samples 10000000000000", "memory"),
    (EV, EV_ARGS.replace("{run}", "{corrupt}"), "corrupt"),
    (EV, EV_ARGS + " --classifier {tmp}/no_classifier.pt", "not found"),
    (EV, EV_ARGS + " --classifier {corrupt}", "corrupt"),
    (EV, EV_ARGS + " --data_dir {bad_magic}", "t10k-labels-idx1-ubyte is damaged"),
    (EV, EV_ARGS + " --out {file}/scores.json", "--out"),
    (EV, EV_ARGS + " --out {ro}/scores.json", "cannot write"),
    (EV, EV_ARGS + " --out {gen}", ".json"),  # JSON over the generator file
    (EV, "", "required"),
    (IN, IN_ARGS + " --seed -1", "--seed"),
    (IN, IN_ARGS + " --n_images 100000", "--n_images"),
    (IN, IN_ARGS + " --candidates 10000000000000", "memory"),
    (IN, IN_ARGS + " --out {tmp}/row.jpg", ".png"),
    (IN, IN_ARGS + " --out {file}/row.png", "--out"),
    (IN, IN_ARGS + " --out {ro}", "cannot write"),
    (IN, IN_ARGS + " --device tpu", "--device"),
    (IN, IN_ARGS.replace("{run}", "{tmp}/no_generator.pt"), "not found"),
    (IN, IN_ARGS + " --classifier {corrupt}", "corrupt"),
    (IN, IN_ARGS + " --threshold nan", "--threshold"),
    (IN, IN_ARGS + " --n_images many", "--n_images"),
    (EX, "{run} {run}", "overlap"),
    (EX, "{run} {run}/exported", "overlap"),
    (EX, "{run} {existing}", "--overwrite"),
    (EX, "{run} {file}/exported", "cannot write"),
    (EX, "{run} {ro}/exported", "cannot write"),
    (EX, "{run} {tmp}/exported --every 0", "--every"),
    (EX, "{tmp}/no_run {tmp}/exported", "not found"),
    (EX, "{run}", "required"),
]
if NO_CUDA:
    CASES += [(script, args + " --device cuda:0", "CUDA") for script, args in ((TC, TC_ARGS), (EV, EV_ARGS), (IN, IN_ARGS))]


def run_case(places: dict[str, str], script: str, args: str) -> subprocess.CompletedProcess | None:
    """One command line of the table in a fresh interpreter; None when it needs a read-only folder there is none of."""
    if "{ro}" in args and not places["ro"]:
        return None
    argv = [a.format(**places) for a in args.split()]
    return subprocess.run([sys.executable, str(ROOT / "part2" / script), *argv], capture_output=True, text=True,
                          timeout=300, cwd=places["tmp"], env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def outcomes(places: dict[str, str]) -> list[subprocess.CompletedProcess | None]:
    """Every case of the table, two processes at a time: most of each is the interpreter importing torch."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda case: run_case(places, *case[:2]), CASES))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{s} {' '.join(a.split()[-2:])}" for s, a, _ in CASES])
def test_bad_input_is_one_line(outcomes: list[subprocess.CompletedProcess | None], places: dict[str, str],
                               index: int) -> None:
    script, _, needle = CASES[index]
    proc = outcomes[index]
    if proc is None:
        pytest.skip("no read-only folder on this machine")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: ") and needle in lines[0], proc.stderr
    assert not (Path(places["tmp"]) / "tc" / "classifier.pt").exists()  # nothing was trained
    assert sorted(p.name for p in Path(places["existing"]).iterdir()) == ["keep.txt"]
