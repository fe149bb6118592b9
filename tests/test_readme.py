"""The README's first section, run as written: each command after the ones before it, on a fresh folder."""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ("python3", "pip", ".")  # the installation itself: done already, by whoever runs the tests


def readme_commands(section: str = "## Set up and run") -> list[list[str]]:
    """The commands of the README's `section`, in order: its bash blocks' lines, continuations joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def test_the_first_section_is_what_a_new_user_runs():
    commands = readme_commands()
    assert [words[:2] for words in commands if words[0] == "textual-inversion"] == [
        ["textual-inversion", "demo"], ["textual-inversion", "train"], ["textual-inversion", "generate"],
        ["textual-inversion", "evaluate"]]
    assert ["python", "-m", "pytest"] in commands


@pytest.mark.slow
def test_the_readme_commands_run_in_order_on_a_fresh_folder(tmp_path):
    if shutil.which("textual-inversion") is None:
        pytest.skip("the textual-inversion command is not installed (pip install -e .)")
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # a checkout's files, and nothing it has made
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for words in readme_commands():
        if words[0] in SETUP or words[:3] == ["python", "-m", "pytest"]:
            continue
        result = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, (shlex.join(words), result.stderr[-2000:])
    assert (tmp_path / "runs" / "demo" / "run" / "learned_embeds.safetensors").is_file()
    assert (tmp_path / "runs" / "teal-thing" / "learned_embeds.safetensors").is_file()
    assert list((tmp_path / "outputs").rglob("grid.png")), "generate wrote no grid"
    assert (tmp_path / "evaluation" / "evaluation.json").is_file()


def test_torch_is_installed_first_and_from_the_cpu_only_index():
    """PyPI's Linux torch is the CUDA build: the README installs the CPU one first, from PyTorch's CPU index
    (the command can only be checked as text here: download.pytorch.org is out of this machine's reach)."""
    installs = [words for words in readme_commands() if words[:2] == ["pip", "install"]]
    assert installs[0][2].startswith("torch==") and installs[0][3:] == [
        "--index-url", "https://download.pytorch.org/whl/cpu"]
    assert installs[1][2] == "-e"  # the package after torch, so it finds torch installed
