"""Part 2's evaluation, classifier, export, interpolation and figures commands: work is never lost, bad input is
one line.

The bad-input table runs each case as the user would, in its own process: exit code 2, exactly one
non-empty line on stderr naming the problem, no traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

import figures
import train_classifier
from classifier import DEFAULT_CLASSIFIER, load_classifier
from conftest import ROOT, run_scripts, write_fake_mnist
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


# --- figures.py: the snapshots' iterations as my_gan.py recorded them -----------------------------------

def test_figures_titles_take_the_recorded_iterations(tmp_path: Path) -> None:
    """The halfway is config.json's half_iteration, not a value derived from n_epochs; without the records,
    the last row of losses.csv is the end."""
    (tmp_path / "config.json").write_text(json.dumps({"n_epochs": 3, "iterations_per_epoch": 100,
                                                      "total_iterations": 300, "half_iteration": 100}))
    when = figures.stage_iterations(tmp_path)
    assert [figures.stage_title(s, when[s]) for s in figures.SNAPSHOTS] == [
        "start (iteration 0)", "halfway (iteration 100, epoch 1)", "end (iteration 300, epoch 3)"]
    (tmp_path / "config.json").write_text(json.dumps({"n_epochs": 3, "iterations_per_epoch": 100}))
    (tmp_path / "losses.csv").write_text("iteration,epoch,loss_d,loss_g,d_real,d_fake\n50,1,1,1,1,1\n200,2,1,1,1,1\n")
    assert figures.stage_iterations(tmp_path) == {"start": (0, 0.0), "half": (100, 1.0), "end": (200, 2.0)}
    (tmp_path / "config.json").unlink()
    (tmp_path / "losses.csv").unlink()
    assert figures.stage_iterations(tmp_path) == dict.fromkeys(figures.SNAPSHOTS)


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
    damaged_runs = {"config_list": ("config.json", b"[1, 2]\n"),
                    "config_type": ("config.json", b'{"total_iterations": "200", "half_iteration": 100}\n'),
                    "config_half": ("config.json", b'{"total_iterations": 200, "half_iteration": 300}\n'),
                    "csv_binary": ("losses.csv", bytes(range(256)))}
    for name, (file, content) in damaged_runs.items():
        shutil.copytree(run, tmp / name)
        (tmp / name / "config.json").unlink()  # a run without records: figures.py reads losses.csv
        (tmp / name / file).write_bytes(content)
    return {"tmp": str(tmp), "run": str(run), "gen": str(run / "generator_end.pt"), "clf": str(clf),
            "data": str(data), "truncated": str(truncated), "bad_magic": str(bad_magic),
            "corrupt": str(tmp / "corrupt.pt"), "file": str(tmp / "a_file"), "existing": str(tmp / "existing"),
            "ro": str(read_only or ""), **{name: str(tmp / name) for name in damaged_runs}}


TC = "train_classifier.py"
TC_ARGS = "--smoke --device cpu --no_download --data_dir {data} --out {tmp}/tc/classifier.pt"
EV = "evaluate.py"
EV_ARGS = "{run} --classifier {clf} --data_dir {data} --no_download --device cpu --n_samples 100"
IN = "interpolate.py"
IN_ARGS = "{run} --classifier {clf} --device cpu --candidates 500"
EX = "export_run.py"
FI = "figures.py"

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
    (FI, "{config_list}", "config.json: the file must be a dictionary, not list"),
    (FI, "{config_type}", "config.json: field 'total_iterations' must be an integer"),
    (FI, "{config_half}", "config.json: field 'half_iteration' must be from 1 to 200"),
    (FI, "{csv_binary}", "losses.csv is not a readable CSV file"),
    (FI, "{run} --scale 1", "--scale"),
    (FI, "{tmp}/no_run", "not a folder"),
]
if NO_CUDA:
    CASES += [(script, args + " --device cuda:0", "CUDA") for script, args in ((TC, TC_ARGS), (EV, EV_ARGS), (IN, IN_ARGS))]


@pytest.fixture(scope="module")
def outcomes(places: dict[str, str]) -> list[subprocess.CompletedProcess | None]:
    """Every case of the table, each as its own process (forks of one interpreter that imported torch once)."""
    runnable = [i for i, (_, args, _) in enumerate(CASES) if "{ro}" not in args or places["ro"]]
    cases = [(str(ROOT / "part2" / CASES[i][0]), [a.format(**places) for a in CASES[i][1].split()], {})
             for i in runnable]
    done = dict(zip(runnable, run_scripts(cases, cwd=Path(places["tmp"]))))
    return [done.get(i) for i in range(len(CASES))]


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


# --- the committed results: nothing is written into part2/results without --overwrite ------------------

# (script, arguments run from the repository root, words the one line must hold)
COMMITTED = [
    (IN, "part2/results/gan --seed 3", "committed results"),  # a new interpolation PNG beside the generator
    (IN, "{run} --classifier {clf} --out part2/results/gan", "committed results"),
    (IN, "{run} --classifier {clf} --out part2/results/gan/row.png", "committed results"),
    (EV, "part2/results/gan --data_dir {data} --no_download", "--overwrite"),  # scores.json exists
    (EV, "part2/results/gan/generator_end.pt --data_dir {data} --no_download", "committed results"),
    (EV, "{gen} --classifier {clf} --data_dir {data} --out part2/results/scores.json", "committed results"),
    (FI, "part2/results/gan", "--overwrite"),  # grids_over_training.png exists
    (FI, "part2/results/gan --out part2/results/gan/grids_again.png", "committed results"),
    (EX, "{run} part2/results/gan_export", "committed results"),
    (EX, "{run} part2/results/gan", "committed results"),
    (TC, TC_ARGS.replace("{tmp}/tc/classifier.pt", "part2/results/classifier2.pt"), "committed results"),
    (TC, TC_ARGS.replace("{tmp}/tc/classifier.pt", "part2/results/classifier.pt"), "--overwrite"),
]


def results_status() -> str:
    """git's view of part2/results, untracked and ignored files included."""
    try:
        return subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--",
                               "part2/results"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")


@pytest.fixture(scope="module")
def committed_outcomes(places: dict[str, str]) -> tuple[str, list[subprocess.CompletedProcess], str]:
    """git status of part2/results before, every COMMITTED case (from the repository root), git status after."""
    before = results_status()

    outcomes = run_scripts([(str(ROOT / "part2" / script), [a.format(**places) for a in args.split()], {})
                            for script, args, _ in COMMITTED])
    return before, outcomes, results_status()


@pytest.mark.parametrize("index", range(len(COMMITTED)), ids=[f"{s} {a.split()[-1]}" for s, a, _ in COMMITTED])
def test_committed_results_need_overwrite(committed_outcomes: tuple[str, list, str], index: int) -> None:
    script, _, needle = COMMITTED[index]
    before, outcomes, after = committed_outcomes
    proc = outcomes[index]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: ") and needle in lines[0], proc.stderr
    assert after == before  # nothing under part2/results was added, changed or removed
