"""README's command blocks as a newcomer types them: every folder, script, notebook, make target and flag exists."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import ROOT, run_scripts


def readme_commands() -> list[tuple[Path, list[str]]]:
    """(working folder, words) of every command line in README's ```bash blocks, following each `cd`."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        cwd = ROOT  # each block starts at the repository root
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            for command in " ".join(words).split(" && "):
                words = command.split()
                if words and words[0] == "cd":
                    cwd = (cwd / words[1]).resolve()
                    assert cwd.is_dir(), line
                elif words:
                    commands.append((cwd, words))
    return commands


def test_readme_commands_name_what_exists() -> None:
    commands = readme_commands()
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    helps = {}
    for cwd, words in commands:
        if words[0] == "make":
            assert all(w in targets or "=" in w for w in words[1:]), words
        elif words[0] == "source":
            assert words[1] == ".venv/bin/activate" and cwd == ROOT, words
        elif words[0] == "jupyter":
            assert (cwd / words[-1]).is_file(), words
        else:
            assert words[0] == "python" and words[1].endswith(".py"), words
            script = (cwd / words[1]).resolve()
            assert script.is_file(), words
            helps.setdefault(script, set()).update(w.split("=")[0] for w in words[2:] if w.startswith("--"))
    scripts = sorted(helps)
    for script, result in zip(scripts, run_scripts([(str(s), ["--help"], {}) for s in scripts])):
        assert result.returncode == 0, (script, result.stderr)
        missing = [flag for flag in helps[script] if flag not in result.stdout]
        assert not missing, (script.name, missing)
    assert any(w[:2] == ["python", "train.py"] for _, w in commands)  # the assignment's own commands lead
    assert any(w[:3] == ["python", "my_gan.py", "--n_epochs"] for _, w in commands)
