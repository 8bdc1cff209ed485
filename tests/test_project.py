"""Project contracts: ruff-clean code, and the README's two set-up commands are what CI runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by the [test] extra")
@pytest.mark.parametrize("command", [["ruff", "check", "."], ["ruff", "format", "--check", "."]])
def test_ruff_is_clean(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_opens_with_exactly_two_setup_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "constraints.txt" in main_job and "constraints.txt" in tests
    assert "gradstarve" in main_job and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci  # .ci/run extracts and runs README's test command rather than a copy of it


def test_readme_python_examples_run():
    """The quick-start code in README.md runs as written (documentation that cannot rot silently)."""
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # our own documentation


def test_the_package_face_is_lazy_and_complete():
    import subprocess
    import sys

    code = (
        "import sys, gradstarve as g; assert 'torch' not in sys.modules, 'import gradstarve pulled torch';"
        "names = [n for n in g.__all__ if n != '__version__']; [getattr(g, n) for n in names];"
        "assert g.FeatureAnalysis.__module__ == 'gradstarve.analysis' and g.fixed_point is g.theory.fixed_point"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
