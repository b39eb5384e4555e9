"""Part 2 evaluation: score functions on known cases, score_run, interpolation, one-line CLI errors."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classifier import DigitClassifier, load_classifier, save_classifier
from conftest import run_scripts, write_fake_mnist
from cs324_utils import UserError
from evaluate import score_run
from interpolate import find_pair, interpolate, interpolation
from models import Generator, load_generator
from part2_fakes import LATENT_DIM, make_run_and_classifier
from scores import (
    class_histogram,
    confident_fraction,
    frechet_distance,
    frechet_distance_feats,
    inception_score,
    kl_from_uniform,
)

PART2 = Path(__file__).resolve().parents[1] / "part2"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run folder of untrained generators and a classifier that sorts their samples confidently."""
    return make_run_and_classifier(tmp_path_factory.mktemp("tiny"))


# --- score functions on known cases ---------------------------------------------------------

def test_frechet_identical_sets_is_zero() -> None:
    feats = torch.randn(500, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert frechet_distance_feats(feats, feats) < 1e-8


def test_frechet_matches_closed_form_and_reference() -> None:
    g = torch.Generator().manual_seed(1)
    # Diagonal covariances: ||dmu||^2 + sum (sqrt a - sqrt b)^2.
    mu1, mu2 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    a, b = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64)
    expected = 5.0 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)
    # Non-commuting covariances: Tr sqrt(S1 S2) is the sum of square roots of the eigenvalues of S1 S2.
    m1, m2 = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.randn(6, 6, generator=g, dtype=torch.float64)
    s1, s2 = m1 @ m1.T + 0.1 * torch.eye(6), m2 @ m2.T + 0.1 * torch.eye(6)
    tr_sqrt = torch.linalg.eigvals(s1 @ s2).real.clamp(min=0).sqrt().sum().item()
    ref = (s1.trace() + s2.trace()).item() - 2 * tr_sqrt
    got = frechet_distance(torch.zeros(6, dtype=torch.float64), s1, torch.zeros(6, dtype=torch.float64), s2)
    assert got == pytest.approx(ref, rel=1e-7)


def test_frechet_grows_with_a_shift() -> None:
    feats = torch.randn(2000, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert frechet_distance_feats(feats, feats + 3.0) == pytest.approx(8 * 9.0, rel=1e-6)


def test_kl_from_uniform_known_cases() -> None:
    one_class = torch.zeros(100, 10, dtype=torch.float64)
    one_class[:, 4] = 1.0
    assert kl_from_uniform(class_histogram(one_class)) == pytest.approx(math.log(10))
    balanced = torch.eye(10, dtype=torch.float64).repeat(30, 1)
    assert kl_from_uniform(class_histogram(balanced)) == pytest.approx(0.0, abs=1e-12)
    assert class_histogram(one_class).tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]


def test_inception_score_known_cases() -> None:
    confident_uniform = torch.eye(10, dtype=torch.float64).repeat(100, 1)  # every split holds each class equally
    mean, std = inception_score(confident_uniform, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    same = torch.full((1000, 10), 0.1, dtype=torch.float64)
    assert inception_score(same)[0] == pytest.approx(1.0)
    one_class = torch.zeros(1000, 10, dtype=torch.float64)
    one_class[:, 7] = 1.0
    assert inception_score(one_class)[0] == pytest.approx(1.0)


def test_confident_fraction_threshold() -> None:
    probs = torch.tensor([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], dtype=torch.float64)
    assert confident_fraction(probs, 0.9) == pytest.approx(0.5)


# --- score_run and interpolation on tiny models -----------------------------------------------

def test_score_run_writes_all_stages(tiny: tuple[Path, Path], fake_mnist: Path) -> None:
    run, clf = tiny
    result = score_run(run, fake_mnist, clf, device="cpu", n_samples=200, seed=0)
    on_disk = json.loads((run / "scores.json").read_text())
    assert set(on_disk) == {"start", "half", "end", "real", "meta"}
    assert on_disk["end"]["fid"] == pytest.approx(result["end"]["fid"])
    for stage in ("start", "half", "end", "real"):
        s = on_disk[stage]
        assert math.isfinite(s["fid"]) and s["fid"] >= 0
        assert 1.0 <= s["inception_score"] <= 10.0 + 1e-9
        assert sum(s["class_histogram"]) == pytest.approx(1.0)
        assert 0.0 <= s["kl_from_uniform"] <= math.log(10) + 1e-9
    assert on_disk["real"]["n"] == 200 and on_disk["meta"]["confidence_threshold"] == 0.9
    assert on_disk["start"]["fid"] != on_disk["end"]["fid"]  # each stage scores its own generator


def test_interpolation_endpoints_differ_in_class(tiny: tuple[Path, Path]) -> None:
    run, clf_path = tiny
    gen, clf = load_generator(run / "generator_end.pt"), load_classifier(clf_path)
    result = interpolation(gen, clf, n_candidates=500, seed=0)
    assert result["images"].shape == (9, 1, 28, 28)
    labels, conf = result["labels"], result["confidences"]
    assert labels[0] != labels[-1]
    assert conf[0] >= 0.9 and conf[-1] >= 0.9
    assert torch.equal(interpolation(gen, clf, n_candidates=500, seed=0)["images"], result["images"])  # seeded
    named = interpolation(gen, clf, from_digit=3, to_digit=8, spherical=True, n_candidates=500, seed=0)
    assert (int(named["labels"][0]), int(named["labels"][-1])) == (3, 8)
    assert gen.training is False and clf.training is False


def test_interpolate_paths() -> None:
    z0, z1 = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    lin = interpolate(z0, z1, 9)
    assert lin.shape == (9, 16) and torch.allclose(lin[0], z0) and torch.allclose(lin[-1], z1)
    assert torch.allclose(lin[4], (z0 + z1) / 2)
    z1 = z1 * z0.norm() / z1.norm()
    sph = interpolate(z0, z1, 9, spherical=True)
    assert torch.allclose(sph[0], z0, atol=1e-5) and torch.allclose(sph[-1], z1, atol=1e-5)
    assert torch.allclose(sph.norm(dim=1), z0.norm().expand(9), rtol=1e-4)  # stays on the sphere


def test_find_pair_fails_clearly_when_no_confident_pair(tiny: tuple[Path, Path]) -> None:
    run, clf_path = tiny
    gen, clf = load_generator(run / "generator_start.pt"), load_classifier(clf_path)
    with pytest.raises(UserError, match="confidence"):  # this classifier never puts this generator's samples in 1
        find_pair(gen, clf, from_digit=1, to_digit=8, n_candidates=500, seed=0)
    with pytest.raises(UserError, match="different"):
        find_pair(gen, clf, from_digit=5, to_digit=5)


# --- bad input: one clear line ----------------------------------------------------------------

def test_load_classifier_rejects_bad_files(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    run, _ = tiny
    with pytest.raises(UserError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="corrupt"):
        load_classifier(tmp_path / "corrupt.pt")
    with pytest.raises(UserError, match="not a digit classifier"):
        load_classifier(run / "generator_end.pt")
    wrong = DigitClassifier()
    wrong.head = torch.nn.Linear(128, 7)  # right kind, wrong shapes
    save_classifier(wrong, tmp_path / "wrong.pt")
    with pytest.raises(UserError, match=r"'head.weight' must have shape \(10, 128\)"):
        load_classifier(tmp_path / "wrong.pt")
    state = DigitClassifier().state_dict()
    for obj, needle in [({"kind": "digit_classifier", "state_dict": list(state.values())}, "'state_dict' must be a"),
                        ({"kind": "digit_classifier", "state_dict": {k: 1 for k in state}}, "must be a tensor"),
                        ({"kind": "digit_classifier", "state_dict": state, "info": [0.99]}, "'info' must be a dict"),
                        ({"kind": "digit_classifier", "state_dict": state, "info": {"test_accuracy": "high"}},
                         "'test_accuracy' must be a finite number")]:
        torch.save(obj, tmp_path / "edited.pt")
        with pytest.raises(UserError, match=needle):
            load_classifier(tmp_path / "edited.pt")


def assert_one_line_error(returncode: int, stderr: str, needle: str) -> None:
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and needle in lines[0], stderr


def run_main(module, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Call a CLI's main(argv) in this process (no second torch import); return exit code and stderr."""
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_evaluate_cli_missing_checkpoint(tmp_path: Path) -> None:
    """The real command line, once, in a subprocess: exit 2, one line, no Traceback."""
    proc = subprocess.run([sys.executable, "evaluate.py", str(tmp_path / "nope.pt"), "--data_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=PART2)
    assert_one_line_error(proc.returncode, proc.stderr, "not found")


def damaged_generators(folder: Path) -> dict[str, Path]:
    """Generator files whose fields were hand-edited or damaged, each as torch.save writes it."""
    state = Generator(LATENT_DIM).state_dict()
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    files = {
        "latent_dim_text": {"kind": "generator", "latent_dim": "abc", "state_dict": state},
        "latent_dim_missing": {"kind": "generator", "state_dict": state},
        "latent_dim_huge": {"kind": "generator", "latent_dim": 10**10, "state_dict": state},
        "state_dict_list": {"kind": "generator", "latent_dim": LATENT_DIM, "state_dict": list(state.values())},
        "state_dict_ints": {"kind": "generator", "latent_dim": LATENT_DIM, "state_dict": dict.fromkeys(state, 1)},
        "weights_nan": {"kind": "generator", "latent_dim": LATENT_DIM, "state_dict": nan},
        "checkpoint_latent_dim": {"generator": state, "config": {"latent_dim": -3}},
    }
    for name, obj in files.items():
        torch.save(obj, folder / f"{name}.pt")
    return {name: folder / f"{name}.pt" for name in files}


# (damaged file, words the one line must hold)
DAMAGED = [
    ("latent_dim_text", "'latent_dim' must be an integer, not 'abc'"),
    ("latent_dim_missing", "'latent_dim' is missing"),
    ("latent_dim_huge", "'latent_dim' must be from 1 to 100000"),
    ("state_dict_list", "'state_dict' must be a dictionary"),
    ("state_dict_ints", "must be a tensor, not 1"),
    ("weights_nan", "holds values that are not finite"),
    ("checkpoint_latent_dim", "config.'latent_dim' must be from 1"),
]


@pytest.fixture(scope="module")
def damaged_outcomes(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """evaluate.py and interpolate.py on each damaged generator file, each in a process of its own."""
    _, clf = tiny
    tmp = tmp_path_factory.mktemp("damaged")
    files, data = damaged_generators(tmp), write_fake_mnist(tmp / "data")
    args = {"evaluate.py": ["--data_dir", str(data), "--no_download", "--n_samples", "100"],
            "interpolate.py": ["--candidates", "500", "--out", str(tmp / "rows")]}
    cases = [(script, name) for script in args for name, _ in DAMAGED]

    runs = [(str(PART2 / script), [str(files[name]), "--classifier", str(clf), "--device", "cpu", *args[script]], {})
            for script, name in cases]
    return dict(zip(cases, run_scripts(runs, cwd=tmp)))


@pytest.mark.parametrize("script", ["evaluate.py", "interpolate.py"])
@pytest.mark.parametrize("name,needle", DAMAGED, ids=[name for name, _ in DAMAGED])
def test_damaged_generator_file_is_one_line(damaged_outcomes: dict, script: str, name: str, needle: str) -> None:
    proc = damaged_outcomes[(script, name)]
    assert_one_line_error(proc.returncode, proc.stderr, needle)
    assert f"{name}.pt" in proc.stderr and "Traceback" not in proc.stdout
    folder = Path(proc.args[0]).parent
    assert not list(folder.glob("*scores.json")) and not (folder / "rows").exists()  # nothing written


def test_evaluate_cli_classifier_that_does_not_match(tiny: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import evaluate
    run, _ = tiny
    gen = str(run / "generator_end.pt")
    code, err = run_main(evaluate, [gen, "--classifier", gen, "--data_dir", str(tmp_path), "--device", "cpu"],
                         capsys)
    assert_one_line_error(code, err, "not a digit classifier")
    code, err = run_main(evaluate, [str(run), "--n_samples", "1", "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "--n_samples")


def test_interpolate_cli_bad_digits(tiny: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    import interpolate
    run, clf = tiny
    code, err = run_main(interpolate, [str(run), "--classifier", str(clf), "--from", "4", "--to", "4"], capsys)
    assert_one_line_error(code, err, "different digits")
    code, err = run_main(interpolate, [str(run), "--classifier", str(clf), "--from", "12"], capsys)
    assert_one_line_error(code, err, "--from")


def test_interpolate_writes_where_out_says(tiny: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """--out FOLDER gets FOLDER/interpolation_A_to_B.png (not FOLDER.png); --out FILE.png gets FILE.png; both reported."""
    import interpolate
    run, clf = tiny
    base = [str(run), "--classifier", str(clf), "--candidates", "500", "--from", "3", "--to", "8"]
    interpolate.main(base + ["--out", str(tmp_path / "rows")])
    wrote = capsys.readouterr().out.strip().splitlines()[-1]
    assert wrote == f"wrote {tmp_path / 'rows' / 'interpolation_3_to_8.png'}"
    assert (tmp_path / "rows" / "interpolation_3_to_8.png").is_file() and not (tmp_path / "rows.png").exists()
    interpolate.main(base + ["--out", str(tmp_path / "one" / "row.png")])
    assert capsys.readouterr().out.strip().endswith(f"wrote {tmp_path / 'one' / 'row.png'}")
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["row.png"]  # no temp file left beside it
    assert not list(run.glob("interpolation*.png"))  # nothing written next to the generator


def test_results_that_exist_are_replaced_only_with_overwrite(tiny: tuple[Path, Path], fake_mnist: Path,
                                                              tmp_path: Path) -> None:
    """evaluate.py and interpolate.py refuse to replace a score file or PNG (a committed one, say) unless asked."""
    import evaluate
    import interpolate
    run, clf = tiny
    png = tmp_path / "row.png"
    png.write_bytes(b"earlier")
    scores = tmp_path / "scores.json"
    scores.write_text("{}")
    calls = [(interpolate.main, [str(run), "--classifier", str(clf), "--candidates", "500", "--from", "3", "--to", "8",
                                 "--out", str(png)]),
             (evaluate.main, [str(run / "generator_end.pt"), "--classifier", str(clf), "--data_dir", str(fake_mnist),
                              "--n_samples", "50", "--no_download", "--out", str(scores)])]
    for main, args in calls:
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 2
    assert png.read_bytes() == b"earlier" and scores.read_text() == "{}"
    for main, args in calls:
        main(args + ["--overwrite"])
    assert png.read_bytes()[:4] == b"\x89PNG" and "fid" in json.loads(scores.read_text())["generator"]


# --- damaged MNIST files: named as damaged, never as a download problem -------------------------

def damage(data_dir: Path, name: str, how: str) -> None:
    path = data_dir / "MNIST" / "raw" / name
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "magic":
        path.write_bytes(b"\x00\x00\x08\x01" + raw[4:])  # an IDX file, but not of MNIST's images
    elif how == "count":
        path.write_bytes(raw[:4] + (10**6).to_bytes(4, "big") + raw[8:])  # header promises more than is there


@pytest.mark.parametrize("name,how", [("train-images-idx3-ubyte", "truncated"), ("train-labels-idx1-ubyte", "empty"),
                                      ("train-images-idx3-ubyte", "magic"), ("train-labels-idx1-ubyte", "count")])
def test_damaged_mnist_is_named(fake_mnist: Path, name: str, how: str) -> None:
    from mnist_data import load_mnist

    damage(fake_mnist, name, how)
    with pytest.raises(UserError, match="not a download problem") as info:
        load_mnist(fake_mnist, train=True, download=True)  # download allowed: it must still not be tried
    assert f"{name} is damaged" in str(info.value) and "download" not in str(info.value).split(";")[0]
    assert load_mnist(fake_mnist, train=False, download=False)[0].shape == (64, 1, 28, 28)  # the other split reads


def test_mismatched_mnist_split_and_missing_file(fake_mnist: Path) -> None:
    from conftest import write_fake_mnist
    from mnist_data import load_mnist

    other = write_fake_mnist(fake_mnist.parent / "other", n_train=128)
    raw = Path("MNIST") / "raw" / "train-labels-idx1-ubyte"
    (fake_mnist / raw).write_bytes((other / raw).read_bytes())  # 256 images, 128 labels
    with pytest.raises(UserError, match="256 images but 128 labels"):
        load_mnist(fake_mnist, train=True, download=False)
    (fake_mnist / raw).unlink()
    with pytest.raises(UserError, match="train-labels-idx1-ubyte not found and downloading is off"):
        load_mnist(fake_mnist, train=True, download=False)


def test_non_finite_classifier_is_neither_saved_nor_loaded(tmp_path: Path) -> None:
    clf = DigitClassifier()
    with torch.no_grad():
        clf.head.bias[3] = float("nan")
    with pytest.raises(UserError, match="not all finite"):
        save_classifier(clf, tmp_path / "nan.pt")
    assert list(tmp_path.iterdir()) == []
    torch.save({"kind": "digit_classifier", "state_dict": clf.state_dict(), "info": {}}, tmp_path / "nan.pt")
    with pytest.raises(UserError, match="'head.bias' holds values that are not finite"):
        load_classifier(tmp_path / "nan.pt")
