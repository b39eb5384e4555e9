"""The results manifests and the chain that re-makes every committed result (make_results.py).

The manifests (part1/results/README.md, part2/results/README.md) must list every file in their
folder, list nothing that is not there, and be the text make_results.py writes from its list of
steps; the quick chain must run end to end without writing into the results folders.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import make_results as mr  # the repository root is on the path (conftest)
from conftest import ROOT

# The quick chain is about 40 processes and takes 3 minutes on 2 idle cores, so the test runs one step
# for each script of the chain, with the steps they need before them: train.py, compare.py,
# grad_norms.py, bench.py, train_classifier.py, my_gan.py, evaluate.py (of a run and of a checkpoint),
# export_run.py, figures.py, interpolate.py, bench_gan.py. Left out: length5_defaults and
# ablation_init (train.py and compare.py again), bench_shared_cpu (train.py three times beside a
# my_gan.py run), the other recipe runs and precision_check (my_gan.py and evaluate.py again).
# Results the quick chain reads but never writes: the interpolation uses the committed generator.
READ_ONLY_INPUTS = {("interpolation", ROOT / "part2" / "results" / "gan")}


def committed_files(part: int) -> list[str]:
    """Files under part<part>/results that git tracks or would add (untracked, not ignored), as they are on disk."""
    folder = mr.RESULTS[part]
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                                 str(folder)], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = {ROOT / p for p in listed.decode().split("\0") if p}
    return sorted(p.relative_to(folder).as_posix() for p in paths if p.is_file())


@pytest.mark.parametrize("part", [1, 2])
def test_every_result_file_is_in_its_manifest(part: int) -> None:
    patterns = mr.manifest_patterns(part)
    unlisted = [f for f in committed_files(part) if not any(mr.matches(p, f) for p in patterns)]
    assert not unlisted, f"part{part}/results holds files no step of make_results.py lists: {unlisted}"


@pytest.mark.parametrize("part", [1, 2])
def test_every_file_in_the_manifest_exists(part: int) -> None:
    files = committed_files(part)
    missing = [p for p in mr.manifest_patterns(part) if not any(mr.matches(p, f) for f in files)]
    assert not missing, f"make_results.py lists part{part}/results files that are not there: {missing}"


@pytest.mark.parametrize("part", [1, 2])
def test_manifest_is_the_text_the_steps_give(part: int) -> None:
    path = mr.RESULTS[part] / "README.md"
    assert path.read_text() == mr.manifest(part), \
        f"{path.relative_to(ROOT)} differs from make_results.py's steps: run python make_results.py --manifests"


def test_docstring_states_the_recorded_time() -> None:
    seconds, _ = mr.totals()
    assert f"add up to {mr.hms(seconds)}" in " ".join(mr.__doc__.split())


def test_step_names_are_unique_and_every_step_makes_something() -> None:
    names = [s.name for s in mr.STEPS]
    assert len(names) == len(set(names))
    for step in mr.STEPS:
        assert step.outputs or step.by_hand, step.name
        assert mr.display(step), step.name


def test_quick_settings_replace_add_and_remove_flags() -> None:
    argv = ["python", "x.py", "--lengths", "4", "9", "--out", "o", "--eval_scores", "--args", "--threads 2"]
    quick = {"--lengths": "19", "--eval_scores": None, "--args": "'--threads 1'", "--smoke": "", "--n": "{r1}/a"}
    assert mr.apply_quick(argv, quick, {"r1": "R"}) == [
        "python", "x.py", "--lengths", "19", "--out", "o", "--args", "--threads 1", "--smoke", "--n", "R/a"]


def test_quick_commands_write_only_into_the_scratch_folder(tmp_path: Path) -> None:
    where = mr.places(True, tmp_path / "scratch", "unused")
    for step in mr.STEPS:
        for _, cwd, argv in mr.step_commands(step, True, where):
            for token in argv[1:]:
                path = (ROOT / cwd / token).resolve()
                if (step.name, path) in READ_ONLY_INPUTS:
                    continue
                for results in mr.RESULTS.values():
                    assert not (path == results or path.is_relative_to(results)), (step.name, argv)


def test_scratch_folder_starts_afresh_but_only_one_the_chain_made(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    mr.fresh_scratch(scratch)
    (scratch / "stale.txt").write_text("from an earlier quick chain")
    mr.fresh_scratch(scratch)
    assert sorted(p.name for p in scratch.iterdir()) == [mr.SCRATCH_MARK]

    foreign = tmp_path / "work"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for bad in (foreign, mr.RESULTS[1] / "quick", ROOT):
        with pytest.raises(mr.UserError):
            mr.fresh_scratch(bad)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_unknown_step_is_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        mr.main(["--only", "nonsense", "--list"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_quick_chain_runs_end_to_end(tmp_path: Path) -> None:
    """`make results QUICK=1`: every step of the chain, tiny, into a scratch folder (a few minutes)."""
    scratch = tmp_path / "scratch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "make_results.py"), "--quick", "--scratch", str(scratch)],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert (scratch / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    for step in mr.STEPS:
        folder = scratch / f"part{step.part}" / "results"
        files = mr.files_under(folder)
        missing = [p for p in step.outputs if not any(mr.matches(p, f) for f in files)]
        assert not missing, f"quick step {step.name} did not write {missing}"
        if step.capture:
            assert f"## {step.commands[0].heading}" in (folder / step.capture).read_text(), step.name
