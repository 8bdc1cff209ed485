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


def test_the_package_type_checks():
    """mypy at the level pyproject's [tool.mypy] sets (every module not on its shrinking ignore list)."""
    import sys

    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_builds_and_installs_into_a_fresh_venv(tmp_path):
    """``pip wheel . --no-deps`` (offline: no build isolation), then that wheel alone into an empty venv."""
    import sys
    import venv
    import zipfile

    source = tmp_path / "source"  # a copy: the build writes build/ and egg-info beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("gradstarve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gradstarve/py.typed" in names and "gradstarve/integrations/lightning.py" in names
    assert not any(name.startswith(("tests/", "docs/", "examples/")) for name in names)

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=False)
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True, capture_output=True)
    code = (
        "import importlib.metadata as m, gradstarve;"
        "assert gradstarve.__version__ == m.version('gradstarve');"
        "assert any(str(f).endswith('py.typed') for f in m.files('gradstarve'));"
        "scripts = m.entry_points(group='console_scripts', name='gradstarve');"
        "assert [e.value for e in scripts] == ['gradstarve.cli:main']"
    )
    subprocess.run([str(python), "-c", code], check=True, cwd=tmp_path)  # the venv has no torch: the face is lazy
