"""Every committed result file, re-made by one command: the chain of runs behind part1/results and part2/results.

    python make_results.py                 # the whole chain, in order, into part1/results and part2/results
    python make_results.py --quick         # the same chain with tiny settings into runs/results_quick (minutes)
    python make_results.py --list          # each step's commands and files (add --quick for the tiny ones)
    python make_results.py --from gan      # continue a chain that stopped, from the step named
    python make_results.py --manifests     # write part1/results/README.md and part2/results/README.md from STEPS
    make results                           # the whole chain; `make results QUICK=1` the quick one

STEPS below is the one list of the chain: each step's commands, exactly as the manifests
(part1/results/README.md, part2/results/README.md) show them and as they run here, and the
committed files they write; the manifests and tests/test_results.py read the same list.
Commands end in --overwrite so that they replace the committed files (a script refuses to write
over a run otherwise); run folders, checkpoints and other internals go to part*/runs/ or are
ignored by git. A command that fails stops the chain with one line naming the step to continue from.

How long the whole chain takes, on a 2-core AMD EPYC (Zen 4) with torch 2.14.1: the times recorded
in the committed files add up to 8 h 59 min (the sweep 2 h 10 min, the template comparison 2 h
45 min, the learning-rate study 2 h 45 min, the other timed steps 1 h 19 min), most of it measured
while runs shared the two cores. Not recorded: the six 200-epoch GAN runs (the default and five of
the recipe comparison), 45-48 min each alone with 2 threads by bench_gan.txt's extrapolations,
about 4 h 40 min in all; the 20 ten-epoch runs of the stabiliser study, about 2 1/4 min each alone,
45 min in all; the precision check, the figures and the interpolations, minutes. About 14 hours in
all on one machine; side by side, one thread a job, less.
--from and --only run part of the chain.

--quick runs every step with tiny settings (a few steps or epochs, small sizes, one round of each
benchmark and one of its repeats, one thread) into SCRATCH/part1/results, SCRATCH/part2/results
and SCRATCH/part2/runs, reading a tiny MNIST in SCRATCH/mnist: the first 512 training and 128 test
images of the real files in --data_dir, or random images in MNIST's format where there are none.
A quick chain starts afresh: it empties SCRATCH first, which it does only to a folder it made
(marked by a file .make_results_quick) or an empty one; --from and --only keep what is there.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import random
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cs324_utils import OneLineParser, TrainingFailed, UserError, atomic_write, run_cli

ROOT = Path(__file__).resolve().parent
PROG = "make_results.py"
RESULTS = {1: ROOT / "part1" / "results", 2: ROOT / "part2" / "results"}
DEFAULT_SCRATCH = ROOT / "runs" / "results_quick"
SCRATCH_MARK = ".make_results_quick"
SHARED_MNIST = "../shared/mnist"  # the offline copy the committed runs read, beside the repository
QUICK_MNIST = (512, 128)  # training and test images of --quick's MNIST
MACHINE = "a 2-core AMD EPYC virtual machine (family 25, model 17: Zen 4, AVX-512 BF16), torch 2.14.1 on the CPU"
# The folders the commands name, as the committed runs named them; --quick points them into SCRATCH.
PLACES = {"r1": "results", "r2": "part2/results", "runs2": "part2/runs", "mnist": SHARED_MNIST}


@dataclass(frozen=True)
class Cmd:
    """One command, as typed (from the repository root, or `cd part1 && ...`), with {r1}, {r2}, {runs2} and
    {mnist} for the folders. quick: flag -> value(s) in --quick (replaced or added; "" a bare flag, None removes
    the flag and its values). heading: the section of the step's capture file that gets this command's output."""
    line: str
    quick: dict[str, str | None] = field(default_factory=dict)
    heading: str = ""
    quick_only: bool = False  # runs only with --quick (e.g. scoring with few samples)
    full_only: bool = False   # skipped by --quick (a benchmark's repeats)


@dataclass(frozen=True)
class Step:
    """A step of the chain: its commands and the committed files (under part<part>/results) they make.

    outputs: paths or patterns ({a,b} and *) the commands write; by_hand: files written by hand from
    the step's outputs, with what they hold; capture: the results file that the commands' standard output goes
    to, under `intro`; took: how long it took and on which machine; seconds: the recorded time, for the total."""
    name: str
    part: int
    title: str
    commands: tuple[Cmd, ...]
    outputs: tuple[str, ...] = ()
    by_hand: dict[str, str] = field(default_factory=dict)
    capture: str | None = None
    intro: str = ""
    took: str = ""
    seconds: float | None = None
    note: str = ""


# Quick settings of the commands each script appears in.
Q_TRAIN = {"--max_steps": "20", "--data_size": "2000", "--threads": "1"}
Q_COMPARE = {"--max_steps": "20", "--eval_every": "10", "--data_size": "2000", "--threads": "1"}
Q_GAN = {"--n_epochs": "2", "--save_interval": "4", "--precision": "bf16", "--threads": "1", "--eval_scores": None}
Q_SCORE = {"--n_samples": "20", "--classifier": "{r2}/classifier.pt"}
PLAIN = "--d_dropout 0 --label_smoothing 0 --ema 0 --lr_decay none"  # the template recipe


def gan_run(run: str, flags: str, files: str | None = None) -> tuple[Cmd, ...]:
    """A 200-epoch my_gan.py run into part2/runs/<run> with --eval_scores; with `files`, its scores.json and
    config.json copied to recipe/<files>_scores.json and recipe/<files>_config.json."""
    cmds = [Cmd(f"python part2/my_gan.py --n_epochs 200 --data_dir {{mnist}} --out {{runs2}}/{run} {flags} "
                "--precision bf16 --overwrite",
                quick=Q_GAN),
            Cmd(f"python part2/evaluate.py {{runs2}}/{run} --data_dir {{mnist}} --n_samples 20 "
                f"--classifier {{r2}}/classifier.pt --overwrite", quick_only=True)]
    if files:
        cmds += [Cmd(f"cp {{runs2}}/{run}/scores.json {{r2}}/recipe/{files}_scores.json"),
                 Cmd(f"cp {{runs2}}/{run}/config.json {{r2}}/recipe/{files}_config.json")]
    return tuple(cmds)


def recipe_step(name: str, title: str, run: str, flags: str, files: str, took: str, note: str = "",
                extra: tuple[Cmd, ...] = (), more: tuple[str, ...] = ()) -> Step:
    return Step(name, 2, title, gan_run(run, flags, files) + extra,
                outputs=(f"recipe/{files}_scores.json", f"recipe/{files}_config.json", *more), took=took, note=note)


RECIPE_TOOK = ("Training time not recorded in a committed file (config.json holds none); one thread ({side}). "
               "200 epochs at the defaults extrapolate to 45-48 min alone with 2 threads (bench_gan.txt).")
BENCH_INTRO = ("Each run: the command below, alone on the machine; the first line of each run names the machine. "
               "Absolute times move by tens of percent between runs on a virtual machine; compare within a run.")

# How long the study steps took (their files' wall times), filled in from the runs.
TOOK_TEMPLATE, SECONDS_TEMPLATE = (
    "Each run's wall_time_s is in its metrics.json: 45-1,513 s, 9,889 s in all, one thread, one run after another "
    "beside other one-thread jobs on the two cores (wall time under sharing).", 9889)
TOOK_LR, SECONDS_LR = (
    "Each run's wall_time_s is in its metrics.json: 5-647 s, 9,885 s for the 76 runs of the four new rates (64 of "
    "seeds 0 and 1, 12 of the close cells' seed 2), one thread, two to four one-thread jobs on the two cores (wall "
    "time under sharing).", 9885)
TOOK_INCREMENT, SECONDS_INCREMENT = (
    "257-500 s a run (wall_time_s), 1,074 s in all, one thread beside another one-thread job.", 1074)
TOOK_RNN_FAILURES, SECONDS_RNN_FAILURES = (
    "1,841 s (wall_time_s in rnn_failures.json: 8 runs of 10,000 steps), one thread, beside another one-thread "
    "job (wall time under sharing).", 1841)
TOOK_RECIPE_STUDY, SECONDS_RECIPE_STUDY = (
    "Training time not recorded in a committed file (config.json holds none); one thread a run, two to four "
    "one-thread jobs on the two cores. 10 epochs at the defaults take about 2 1/4 min alone with 2 threads "
    "(bench_gan.txt); scoring a run's two generators took 19-46 s (meta.seconds in each scores.json).", None)

STEPS: tuple[Step, ...] = (
    # ---------------------------------------------------------------- part 1
    Step("train_len20", 1, "the default run at input length 20 (LSTM, course defaults)",
         (Cmd("cd part1 && python train.py --input_length 20 --out {r1}/train_len20 --no_progress --overwrite",
              quick=Q_TRAIN),),
         outputs=("train_len20/metrics.json", "train_len20/curves.png"),
         took="126 s (wall_time_s in metrics.json), 2 threads, alone on the machine.", seconds=125.54),
    Step("length5_defaults", 1, "palindromes of length 5 at the default settings, seeds 0-2",
         tuple(Cmd(f"cd part1 && python train.py --input_length 4 --seed {s} --out {{r1}}/length5_defaults/seed{s} "
                   "--no_progress --overwrite", quick=Q_TRAIN) for s in (0, 1, 2)),
         outputs=("length5_defaults/seed{0,1,2}/metrics.json", "length5_defaults/seed{0,1,2}/curves.png"),
         by_hand={"length5_defaults/README.md": "what the three runs show, with their numbers"},
         took="44, 56 and 41 s (wall_time_s), each alone on the machine with 2 threads.",
         seconds=44.03 + 55.99 + 41.34),
    Step("compare", 1, "LSTM against RNN over input lengths, 3 seeds",
         (Cmd("cd part1 && python compare.py --out {r1}/compare --overwrite",
              quick={**Q_COMPARE, "--lengths": "4 9", "--lstm_lengths": "19", "--seeds": "0"}),),
         outputs=("compare/compare.json", "compare/compare.md", "compare/compare.png", "compare/compare_curves.png",
                  "compare/{lstm,rnn}_len*_seed*/metrics.json"),
         took="Each run's wall_time_s is in its metrics.json. The 21 LSTM runs ran alone with 2 threads "
              "(0.75-251 s each at lengths 4-99, 427-567 s at 199; 2,497 s in all): they were made afresh, their "
              "old folders removed, by `--resume` in place of `--overwrite`, which kept the RNN runs. The 18 RNN "
              "runs ran as several one-thread processes side by side (`--models rnn`, then `--models rnn "
              "--lengths 99 --seeds 1` and `--seeds 2`, into the same folder), 1-1,068 s each, wall time under "
              "sharing, 5,298 s in all.",
         seconds=2497 + 5298,
         note="compare.py with --resume keeps the finished runs in the folder and rebuilds compare.json, .md and "
              "the two plots from all of them; each metrics.json records the command of its own run."),
    Step("ablation_init", 1, "LSTM at length 49 with forget bias 1 instead of chrono initialisation",
         (Cmd("cd part1 && python compare.py --models lstm --lengths 49 --seeds 0 --lstm_lengths "
              "--lstm_init forget_bias --forget_bias 1 --out {r1}/ablation_init --overwrite", quick=Q_COMPARE),),
         outputs=("ablation_init/compare.json", "ablation_init/compare.md", "ablation_init/compare.png",
                  "ablation_init/compare_curves.png", "ablation_init/lstm_len49_seed0/metrics.json"),
         took="97 s (wall_time_s), 2 threads, alone on the machine.", seconds=97.29),
    Step("grad_norms", 1, "input-gradient norms against the step, RNN and LSTM at length 49",
         (Cmd("cd part1 && python grad_norms.py --out {r1}/grad_norms --threads 1 --overwrite",
              quick={"--input_length": "5", "--steps": "4", "--num_hidden": "8", "--probe_size": "50",
                     "--threads": "1"}),),
         outputs=("grad_norms/grad_norms.json", "grad_norms/grad_norms.png"),
         took="233 s (wall_time_s in grad_norms.json, which also names the machine), one thread, alone on the "
              "machine.", seconds=232.6),
    Step("template", 1, "LSTM against RNN at the template's settings (digits as numbers, forget bias 1), 3 seeds",
         (Cmd("cd part1 && python compare.py --lengths 4 9 14 19 29 49 --lstm_lengths --seeds 0 1 2 --input_dim 1 "
              "--lstm_init forget_bias --forget_bias 1 --target_accuracy 0 --threads 1 --out {r1}/template --overwrite",
              quick={**Q_COMPARE, "--lengths": "4 9", "--seeds": "0"}),),
         outputs=("template/compare.json", "template/compare.md", "template/compare.png", "template/compare_curves.png",
                  "template/{lstm,rnn}_len*_seed*/metrics.json"),
         took=TOOK_TEMPLATE, seconds=SECONDS_TEMPLATE),
    Step("lr_study", 1, ("the learning-rate study: five rates x four input lengths x two seeds (three in the cells "
                     "where two leave the answer close), both models"),
         (Cmd("cd part1 && python lr_study.py --learning_rates 0.0001 0.0003 0.003 0.01 --reuse 0.001={r1}/template "
              "--close lstm:29 rnn:9 rnn:19 --threads 1 --out {r1}/lr_study --overwrite",
              quick={"--learning_rates": "0.01", "--reuse": None, "--lengths": "3", "--seeds": "0",
                     "--close": "rnn:3", "--max_steps": "20"}),),
         outputs=("lr_study/lr_study.json", "lr_study/lr_study.md", "lr_study/lr_study.png",
                  "lr_study/lr*/compare.{json,md,png}", "lr_study/lr*/compare_curves.png",
                  "lr_study/lr*/{lstm,rnn}_len*_seed*/metrics.json", "lr_study/lr*/close_*/compare.{json,md,png}",
                  "lr_study/lr*/close_*/compare_curves.png", "lr_study/lr*/close_*/{lstm,rnn}_len*_seed2/metrics.json"),
         took=TOOK_LR, seconds=SECONDS_LR,
         note="Each learning rate's sweep was first run on its own (`--learning_rates RATE --resume`, with "
              "`--overwrite` inside the committed folder; each lr*/compare.json records compare.py's command); the "
              "command above with --resume then kept those runs and drew the summary; the close cells' seed 2 was "
              "added the same way later. The lr 0.001 column is the template step's runs read up to the study's "
              "5,000 steps (its seed 2 only in the close cells)."),
    Step("increment_onehot_fb1", 1, "one-hot digits with forget bias 1 at input length 49: the increment between "
                                    "the template's input and ours, and between forget bias 1 and chrono",
         (Cmd("cd part1 && python compare.py --models lstm --lengths 49 --lstm_lengths --seeds 0 1 2 --input_dim 10 "
              "--lstm_init forget_bias --forget_bias 1 --threads 1 --out {r1}/increment_onehot_fb1 --overwrite",
              quick={**Q_COMPARE, "--lengths": "5"}),),
         outputs=("increment_onehot_fb1/compare.{json,md,png}", "increment_onehot_fb1/compare_curves.png",
                  "increment_onehot_fb1/lstm_len*_seed*/metrics.json"),
         took=TOOK_INCREMENT, seconds=SECONDS_INCREMENT),
    Step("rnn_failures", 1, "the RNN's collapses and plateaus, recorded step by step",
         (Cmd("cd part1 && python rnn_failures.py --threads 1 --out {r1}/rnn_failures --overwrite",
              quick={"--cases": "len29_seed2 len29_seed2_lr3e-4 len29_seed2_clip1 len19_seed2", "--steps": "20"}),
          Cmd("cd part1 && python rnn_failures.py --redraw --out {r1}/rnn_failures --overwrite")),
         outputs=("rnn_failures/rnn_failures.json", "rnn_failures/rnn_collapses.png", "rnn_failures/rnn_plateaus.png",
                  "rnn_failures/steps.*.csv"),
         took=TOOK_RNN_FAILURES, seconds=SECONDS_RNN_FAILURES,
         note="The second command draws the two figures again from the files the first wrote (seconds); the "
              "committed figures come from it."),
    Step("bench", 1, "milliseconds per LSTM training step, four runs",
         tuple(Cmd("cd part1 && python bench.py", heading=f"run {i}", full_only=i > 1,
                   quick={"--lengths": "4", "--steps": "2", "--rounds": "1", "--layer_seconds": "0.01"})
               for i in (1, 2, 3, 4)),
         outputs=("bench.txt",), capture="bench.txt", intro=BENCH_INTRO,
         took="619 s for the four runs (make_results.py's log), alone on the machine with 2 threads (each "
              "run's first line).", seconds=619,
         note="Written by the driver: each run's standard output under `## run N`, with its command."),
    Step("bench_shared_cpu", 1, "part 1's training speed alone and beside a running my_gan.py",
         (Cmd('python part1/bench_shared_cpu.py --data_dir {mnist} --part1_args "--threads 2" --gan_args "--threads 2"',
              heading="Fixed threads: torch's own default, one thread per core",
              quick={"--steps": "10", "--gan_seconds": "0.5", "--part1_args": "'--threads 1'",
                     "--gan_args": "'--threads 1 --precision bf16 --batch_size 16'"}),
          Cmd("python part1/bench_shared_cpu.py --data_dir {mnist}", full_only=True,
              heading="The defaults (--threads 0: the idle cores at start-up; my_gan.py looks again every 5 s)")),
         outputs=("bench_shared_cpu.txt",), capture="bench_shared_cpu.txt",
         intro="Each command alone on the machine; the first line of each names the machine.",
         took="247 s for both commands (make_results.py's log), each alone on the machine.", seconds=247,
         note="Written by the driver: each command's standard output under its heading."),
    # ---------------------------------------------------------------- part 2
    Step("classifier", 2, "the digit classifier that scores the GAN",
         (Cmd("python part2/train_classifier.py --data_dir {mnist} --out {r2}/classifier.pt --overwrite",
              quick={"--smoke": "", "--epochs": "1"}),),
         outputs=("classifier.pt", "classifier.json"),
         took="136 s of training, 142 s for the whole command (classifier.json), 2 threads on cores shared with "
              "other jobs (load average about 3.5).", seconds=142,
         note="The recorded command has no --out: the default output was then part2/results/classifier.pt."),
    Step("gan", 2, "the 200-epoch GAN at the defaults, exported and scored",
         gan_run("gan200_v5_d01", "--eval_scores --threads 1 --d_dropout 0.1", "dropout0.1") + (
             Cmd("python part2/export_run.py {runs2}/gan200_v5_d01 {r2}/gan --overwrite"),
             Cmd("python part2/evaluate.py {r2}/gan --data_dir {mnist} --overwrite", quick=Q_SCORE)),
         outputs=("gan/config.json", "gan/generator_{start,half,end}.pt", "gan/grid_{start,half,end}.png",
                  "gan/grids/iter_*.png", "gan/losses.csv", "gan/losses.png", "gan/scores.json",
                  "recipe/dropout0.1_scores.json", "recipe/dropout0.1_config.json"),
         took="Training time not recorded in a committed file (one thread, beside the two other runs of the "
              "dropout comparison; 200 epochs at the defaults extrapolate to 45-48 min alone with 2 threads, "
              "bench_gan.txt); scoring 12.8 s (--eval_scores) and 14.9 s (evaluate.py), the score files' "
              "meta.seconds.", seconds=12.8 + 14.9,
         note="Every 200-epoch run here trained in bf16, then the default; --precision bf16 keeps that where "
              "--precision auto, the default now, would time the two and could pick float32. "
              "gan/scores.json scores the float16 copies of the generators that the export wrote (evaluate.py on "
              "part2/results/gan); recipe/dropout0.1_scores.json scores the run folder's float32 generators "
              "(--eval_scores). So their numbers differ in the third decimal place: FID 2.758 against 2.755 at "
              "the end and 2.841 against 2.839 halfway, confident fraction 0.9051 against 0.9047; the Inception "
              "Scores agree to four digits (9.040, 8.917), each class share to 0.01 percentage point, and the "
              "real-image row is the same."),
    Step("figures", 2, "the start, halfway and end grids side by side; the loss curves drawn again from losses.csv",
         (Cmd("python part2/figures.py {r2}/gan --overwrite"), Cmd("python part2/figures.py {r2}/gan --losses --overwrite")),
         outputs=("gan/grids_over_training.png",), took="Not recorded (seconds)."),
    Step("interpolation", 2, "a path in latent space between two digits of different classes",
         (Cmd("python part2/interpolate.py {r2}/gan --seed 0 --overwrite", full_only=True),
          Cmd("python part2/interpolate.py part2/results/gan --seed 0 --out {r2}/gan --overwrite", quick_only=True),
          Cmd("python part2/interpolate.py {r2}/gan --from 5 --to 3 --spherical --overwrite", full_only=True),
          Cmd("python part2/interpolate.py part2/results/gan --from 5 --to 3 --spherical --out {r2}/gan --overwrite",
              quick_only=True)),
         outputs=("gan/interpolation_7_to_8.png", "gan/interpolation_5_to_3.png"),
         took="Not recorded (seconds each).",
         note="The file is named by the two classes that the seeded search finds. "
              "--quick interpolates with the committed generator and judge (a generator trained for a few "
              "iterations draws one class only) into the scratch folder."),
    recipe_step("recipe_plain", "the plain template recipe", "gan200", f"--eval_scores --threads 1 {PLAIN}", "plain",
                RECIPE_TOOK.format(side="run before the others"),
                note="The recorded command has no recipe flags: the template recipe was then the default, which "
                     "these four flags give now."),
    recipe_step("recipe_ema", "the template recipe with the moving average of G", "gan200_ema_only",
                "--eval_scores --threads 1 --d_dropout 0 --label_smoothing 0 --lr_decay none", "ema",
                RECIPE_TOOK.format(side="shared cores") + " The live generator's scoring: 8.4 s.",
                note="The recorded command has no --lr_decay: the flag came later, with the decay off before.",
                extra=(Cmd("python part2/evaluate.py {runs2}/gan200_ema_only/checkpoint.pt --data_dir {mnist} "
                           "--out {r2}/recipe/ema_live_scores.json --overwrite", quick=Q_SCORE),),
                more=("recipe/ema_live_scores.json",)),
    recipe_step("recipe_dropout0.3", "the default recipe with dropout 0.3 in D", "gan200_v5_d03",
                "--eval_scores --threads 1 --d_dropout 0.3", "dropout0.3",
                RECIPE_TOOK.format(side="beside the default run and the dropout 0.2 run"),
                note="The recorded command has no --d_dropout: 0.3 was then the default."),
    recipe_step("recipe_dropout0.2", "the default recipe with dropout 0.2 in D", "gan200_v5_d02",
                "--eval_scores --threads 1 --d_dropout 0.2", "dropout0.2",
                RECIPE_TOOK.format(side="beside the default run and the dropout 0.3 run")),
    recipe_step("recipe_seed1", "the default recipe, seed 1", "gan200_v5_d01_seed1",
                "--seed 1 --eval_scores --threads 1", "dropout0.1_seed1",
                RECIPE_TOOK.format(side="after the other three, mostly alone")),
    Step("recipe_study", 2, "the four stabilisers left out one at a time (3 seeds), and dropout levels (seed 0), "
                            "10 epochs each",
         (Cmd("python part2/recipe_study.py --data_dir {mnist} --no_download --n_epochs 10 --jobs 1 --settings "
              "'all four' 'no dropout' 'no label smoothing' 'no weight average' 'no lr decay' none "
              "--runs {runs2}/recipe_study --out {r2}/recipe_study --overwrite",
              quick={"--n_epochs": "1", "--settings": "'all four' none", "--seeds": "0", "--n_samples": "20"}),
          Cmd("python part2/recipe_study.py --data_dir {mnist} --no_download --n_epochs 10 --jobs 1 --settings "
              "'all four' 'dropout 0.2' 'dropout 0.3' --seeds 0 --runs {runs2}/recipe_study "
              "--out {r2}/recipe_study/dropout_levels --overwrite",
              quick={"--n_epochs": "1", "--settings": "'all four' 'dropout 0.2'", "--n_samples": "20"}),
          Cmd("python part2/recipe_study.py --redraw --out {r2}/recipe_study --overwrite"),
          Cmd("python part2/recipe_study.py --redraw --out {r2}/recipe_study/dropout_levels --overwrite")),
         outputs=("recipe_study/recipe_study.{json,md,png}", "recipe_study/*_seed*/{losses.csv,config.json,scores.json}",
                  "recipe_study/dropout_levels/recipe_study.{json,md,png}",
                  "recipe_study/dropout_levels/*_seed*/{losses.csv,config.json,scores.json}"),
         took=TOOK_RECIPE_STUDY, seconds=SECONDS_RECIPE_STUDY,
         note="The last two commands draw the figures again from each recipe_study.json (seconds); the committed "
              "figures come from them."),
    Step("precision_check", 2, "bf16 autocast against float32 after 5 epochs, seeds 0 and 1",
         tuple(c for s in (0, 1) for p in ("bf16", "fp32") for c in (
             Cmd(f"python part2/my_gan.py --n_epochs 5 --precision {p} --seed {s} --threads 1 --data_dir {{mnist}} "
                 f"--out {{runs2}}/prec_{p}_s{s} --eval_scores {PLAIN} --overwrite", quick=Q_GAN, full_only=s > 0),
             Cmd(f"python part2/evaluate.py {{runs2}}/prec_{p}_s{s} --data_dir {{mnist}} --n_samples 20 "
                 f"--classifier {{r2}}/classifier.pt --overwrite", quick_only=True, full_only=s > 0))),
         by_hand={"precision_check.md": "the four runs' end scores (their scores.json)"},
         took="Not recorded in a committed file; 5 epochs a run, one thread each, one run after another on the 2 "
              "shared cores.",
         note="The recorded command has no recipe flags: the template recipe was then the default, which these "
              "four flags give now."),
    Step("bench_gan", 2, "milliseconds per GAN iteration against conventional loops, three runs",
         tuple(Cmd("python part2/bench_gan.py --data_dir {mnist}", heading=f"run {i}", full_only=i > 1,
                   quick={"--iters": "4", "--warmup": "1", "--rounds": "1", "--threads": "1", "--no_breakdown": ""})
               for i in (1, 2, 3)),
         outputs=("bench_gan.txt",), capture="bench_gan.txt", intro=BENCH_INTRO,
         took="220 s for the three runs (make_results.py's log), alone on the machine with 2 threads (each "
              "run's first line).", seconds=220,
         note="Written by the driver: each run's standard output under `## run N`, with its command."),
)

HAND_NOTES = {  # files under part2/results written by hand, not by one step
    2: {"recipe/README.md": "the recipe runs: each run's command and files (steps gan and recipe_*)"},
}


# ------------------------------------------------------------------------- commands


def places(quick: bool, scratch: Path, data_dir: str) -> dict[str, str]:
    if not quick:
        return {**PLACES, "mnist": data_dir}
    return {"r1": str(scratch / "part1" / "results"), "r2": str(scratch / "part2" / "results"),
            "runs2": str(scratch / "part2" / "runs"), "mnist": str(scratch / "mnist")}


def is_flag(token: str) -> bool:
    return re.fullmatch(r"--[A-Za-z0-9_]+", token) is not None


def apply_quick(argv: list[str], quick: dict[str, str | None], where: dict[str, str]) -> list[str]:
    """argv with each flag of `quick` given its quick value(s), replaced where present, else added.

    A value is split like a shell line ("4 9" is two values; quote one that holds spaces); "" leaves a bare
    flag and None removes the flag with its values."""
    out = list(argv)
    for flag, value in quick.items():
        values = [] if value is None else shlex.split(value.format(**where))
        if flag in out:
            i = out.index(flag)
            j = i + 1
            while j < len(out) and not is_flag(out[j]):
                j += 1
            out[i:j] = [] if value is None else [flag, *values]
        elif value is not None:
            out += [flag, *values]
    return out


def split(line: str, where: dict[str, str]) -> tuple[str, list[str]]:
    """(folder relative to the repository root, argv) of a command line."""
    m = re.fullmatch(r"cd (\S+) && (.*)", line)
    cwd, rest = (m.group(1), m.group(2)) if m else (".", line)
    return cwd, shlex.split(rest.format(**where))


def shown(cwd: str, argv: list[str]) -> str:
    text = shlex.join(argv)
    return text if cwd == "." else f"cd {cwd} && {text}"


def step_commands(step: Step, quick: bool, where: dict[str, str]) -> list[tuple[Cmd, str, list[str]]]:
    """(command, folder, argv) of each command the step runs in this mode."""
    out = []
    for cmd in step.commands:
        if (cmd.quick_only and not quick) or (cmd.full_only and quick):
            continue
        cwd, argv = split(cmd.line, where)
        if quick:
            argv = apply_quick(argv, cmd.quick, where)
        out.append((cmd, cwd, argv))
    return out


def display(step: Step, quick: bool = False, where: dict[str, str] | None = None) -> list[str]:
    """The step's commands as a reader types them (python, not this interpreter's path)."""
    where = where or PLACES
    return [shown(cwd, argv) for _, cwd, argv in step_commands(step, quick, where)]


# ------------------------------------------------------------------------- files


def expand(pattern: str) -> list[str]:
    """Brace alternatives of a pattern: "a/{b,c}/d" -> ["a/b/d", "a/c/d"]."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    return [p for alt in m.group(1).split(",") for p in expand(pattern[:m.start()] + alt + pattern[m.end():])]


def matches(pattern: str, path: str) -> bool:
    """Whether a path relative to a results folder matches a pattern ({a,b} alternatives; * within one name)."""
    parts = path.split("/")
    for p in expand(pattern):
        pp = p.split("/")
        if len(pp) == len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pp)):
            return True
    return False


def manifest_patterns(part: int) -> list[str]:
    """Every file pattern the manifest of part<part>/results lists: the steps' outputs, files written by hand,
    and the manifest itself."""
    pats = [p for s in STEPS if s.part == part for p in (*s.outputs, *s.by_hand)]
    return [*pats, *HAND_NOTES.get(part, {}), "README.md"]


def files_under(folder: Path) -> list[str]:
    """Every file under folder, relative to it, with / separators."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def made_dirs(step: Step, results: Path) -> None:
    """The folders the step's outputs go to that have no pattern in their path (cp does not make folders)."""
    for out in (*step.outputs, *([step.capture] if step.capture else [])):
        parent = Path(out).parent
        if not any(c in str(parent) for c in "*{"):
            (results / parent).mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------- manifests


def hms(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def totals() -> tuple[float, list[str]]:
    """(recorded seconds of all steps, names of the steps with no recorded time)."""
    return (sum(s.seconds for s in STEPS if s.seconds is not None),
            [s.name for s in STEPS if s.seconds is None])


def manifest(part: int) -> str:
    """The text of part<part>/results/README.md."""
    steps = [s for s in STEPS if s.part == part]
    folder = f"part{part}/results"
    seconds, _ = totals()
    lines = [
        f"# {folder}: what made each file",
        "",
        "Every file in this folder, with the command that made it, how long that took and where. Unless a step "
        f"says otherwise, everything ran on {MACHINE}. Commands run from the repository root, or from the folder "
        "their `cd` names; `../shared/mnist` is the offline MNIST copy beside the repository.",
        "",
        "`python make_results.py` (or `make results`) runs the commands of both results folders, in the order "
        "shown (part 1, then part 2); `python make_results.py --quick` runs the same chain with tiny settings into "
        "a scratch folder in a few minutes. The commands that write results end in `--overwrite` so that they "
        "replace the committed files; the files were first made without it, into empty folders. The times "
        "recorded below add up to "
        f"{hms(sum(s.seconds for s in steps if s.seconds is not None))} for this folder and {hms(seconds)} for "
        "both; with what is not recorded, mostly 200-epoch GAN runs, the whole chain takes about 14 hours "
        "(make_results.py).",
        "",
        "This file is written by `python make_results.py --manifests` from the list of steps in "
        "make_results.py: change that list, not this file.",
        "",
    ]
    for i, step in enumerate(steps, 1):
        lines += [f"## {i}. `{step.name}`: {step.title}", ""]
        lines += [f"- `{p}`" for p in step.outputs]
        lines += [f"- `{p}`: written by hand: {what}" for p, what in step.by_hand.items()]
        lines += ["", "```bash", *display(step), "```", "", f"**Took:** {step.took}"]
        if step.note:
            lines += ["", f"**Note:** {step.note}"]
        lines.append("")
    extra = {**HAND_NOTES.get(part, {}), "README.md": "this file (`python make_results.py --manifests`)"}
    lines += ["## Other files", ""] + [f"- `{p}`: {what}" for p, what in extra.items()] + [""]
    return "\n".join(lines)


def write_manifests() -> None:
    for part, folder in RESULTS.items():
        atomic_write(folder / "README.md", lambda tmp, part=part: Path(tmp).write_text(manifest(part)))
        print(f"{PROG}: wrote {folder.relative_to(ROOT) / 'README.md'}")


# ------------------------------------------------------------------------- running


def write_quick_mnist(source: Path, dest: Path) -> str:
    """The first QUICK_MNIST images of the MNIST in source (random images where it has none) in MNIST's format."""
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    real = all((source / "MNIST" / "raw" / f"{p}-{k}").is_file()
               for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    rng = random.Random(0)
    for prefix, n in zip(("train", "t10k"), QUICK_MNIST):
        for kind, header, size in (("images-idx3-ubyte", struct.pack(">IIII", 2051, n, 28, 28), 28 * 28),
                                   ("labels-idx1-ubyte", struct.pack(">II", 2049, n), 1)):
            name = f"{prefix}-{kind}"
            if real:
                with open(source / "MNIST" / "raw" / name, "rb") as f:
                    f.seek(len(header))
                    body = f.read(n * size)
            else:
                body = rng.randbytes(n * 28 * 28) if size > 1 else bytes(rng.randrange(10) for _ in range(n))
            (raw / name).write_bytes(header + body)
    return f"the first {QUICK_MNIST[0]} training and {QUICK_MNIST[1]} test images of {source}" if real else \
        f"{QUICK_MNIST[0]} + {QUICK_MNIST[1]} random images (no MNIST in {source})"


def fresh_scratch(scratch: Path) -> None:
    """Empty the scratch folder: only one this script made (it holds SCRATCH_MARK) or an empty one."""
    for results in RESULTS.values():
        if scratch == results or scratch.is_relative_to(results) or results.is_relative_to(scratch):
            raise UserError(f"--scratch {scratch} overlaps {results.relative_to(ROOT)}: the quick chain never "
                            "writes there; choose another folder")
    if scratch.exists():
        if not scratch.is_dir():
            raise UserError(f"--scratch {scratch} is a file")
        if any(scratch.iterdir()) and not (scratch / SCRATCH_MARK).is_file():
            raise UserError(f"--scratch {scratch} holds files this script did not put there; give a new or "
                            "empty folder")
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    (scratch / SCRATCH_MARK).write_text(f"made by {PROG} --quick; emptied by the next quick chain\n")


def run_step(step: Step, quick: bool, where: dict[str, str], results: Path) -> None:
    made_dirs(step, results)
    captured = f"# {step.capture} ({step.title})\n\n{step.intro}\n" if step.capture else ""
    for cmd, cwd, argv in step_commands(step, quick, where):
        text = shown(cwd, argv)
        print(f"{PROG}: [{step.name}] {text}", flush=True)
        exe = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
        done = subprocess.run(exe, cwd=ROOT / cwd, stdout=subprocess.PIPE if cmd.heading else None, text=True)
        if cmd.heading:
            print(done.stdout, end="", flush=True)
        if done.returncode != 0:
            raise TrainingFailed(f"step {step.name} failed (exit {done.returncode}): {text}; fix it and continue "
                                 f"with --from {step.name}")
        if cmd.heading:
            captured += f"\n## {cmd.heading}\n\n    {text}\n\n{done.stdout}"
            atomic_write(results / step.capture, lambda tmp: Path(tmp).write_text(captured))


def pick_steps(only: list[str] | None, start: str | None) -> list[Step]:
    names = [s.name for s in STEPS]
    for name in [*(only or []), *([start] if start else [])]:
        if name not in names:
            raise UserError(f"no step named {name}; the steps: {' '.join(names)}")
    if only:
        return [s for s in STEPS if s.name in only]
    return list(STEPS[names.index(start):]) if start else list(STEPS)


def list_steps(steps: list[Step], quick: bool, where: dict[str, str]) -> None:
    for step in steps:
        print(f"[{step.name}] part {step.part}: {step.title}")
        for line in display(step, quick, where):
            print(f"    {line}")
        for out in (*step.outputs, *step.by_hand):
            print(f"    -> part{step.part}/results/{out}")
    seconds, missing = totals()
    print(f"recorded time: {hms(seconds)}; not recorded: {' '.join(missing)}")


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings, into --scratch (see below)")
    p.add_argument("--scratch", default=str(DEFAULT_SCRATCH),
                   help="the quick chain's folder, emptied first (default: runs/results_quick)")
    p.add_argument("--data_dir", default=None,
                   help="MNIST root (holds MNIST/raw/); default: ../shared/mnist where it holds MNIST, else "
                        "part2/data (downloaded there if missing)")
    p.add_argument("--from", dest="start", metavar="STEP", help="start at this step (after a stop)")
    p.add_argument("--only", nargs="+", metavar="STEP", help="run these steps only, in the chain's order")
    p.add_argument("--list", action="store_true", help="print the steps' commands and files; run nothing")
    p.add_argument("--manifests", action="store_true",
                   help="write part1/results/README.md and part2/results/README.md from STEPS; run nothing")
    args = p.parse_args(argv)
    run_cli(PROG, lambda: run(args))


def default_data_dir() -> str:
    return SHARED_MNIST if (ROOT / SHARED_MNIST / "MNIST" / "raw").is_dir() else "part2/data"


def run(args: argparse.Namespace) -> None:
    if args.manifests:
        write_manifests()
        return
    steps = pick_steps(args.only, args.start)
    data_dir = default_data_dir() if args.data_dir is None else str(Path(args.data_dir).resolve())
    scratch = Path(args.scratch).resolve()
    where = places(args.quick, scratch, data_dir)
    if args.list:
        list_steps(steps, args.quick, where)
        return
    if args.quick:
        if not (args.only or args.start):
            fresh_scratch(scratch)
        else:
            scratch.mkdir(parents=True, exist_ok=True)
            (scratch / SCRATCH_MARK).touch()
        if not (scratch / "mnist" / "MNIST" / "raw").is_dir():
            print(f"{PROG}: quick MNIST: {write_quick_mnist(ROOT / data_dir, scratch / 'mnist')}")
    begin = time.time()
    for step in steps:
        results = Path(where["r1"] if step.part == 1 else where["r2"])
        t0 = time.time()
        run_step(step, args.quick, where, results if results.is_absolute() else RESULTS[step.part])
        print(f"{PROG}: [{step.name}] done in {time.time() - t0:.0f} s", flush=True)
    print(f"{PROG}: {len(steps)} steps in {time.time() - begin:.0f} s"
          f"{f'; outputs in {scratch}' if args.quick else ''}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
