"""The README's test command is what CI runs: the same extras, the same pytest command, and a `slow`
marker that the fast tier can leave out."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quickstart", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()


def test_quickstart_is_two_commands():
    assert len(quickstart()) == 2


def test_readme_test_command_installs_and_runs_what_ci_does():
    readme = quickstart()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extras = re.findall(r'-e "\.\[([a-z0-9,]+)\]"', readme)
    assert extras and re.findall(r'-e "\.\[([a-z0-9,]+)\]"', ci) == extras
    assert readme.endswith("python -m pytest -q")
    assert re.search(r"^python3? -m pytest -q$", ci, flags=re.M)


def test_the_test_extra_holds_every_optional_test_dependency():
    """The plot, export and serving tests skip without their packages: the extra CI installs must carry them."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    test_extra = re.search(r"^test = \[(.*?)\]", pyproject, flags=re.M | re.S).group(1)
    for package in ("pytest", "ctranslate2", "matplotlib", "fastapi", "uvicorn", "playwright", "libretranslatepy"):
        assert f'"{package}' in test_extra, package


def test_slow_marker_is_declared_and_used():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'markers = \["slow:', pyproject)
    users = [p.name for p in (ROOT / "tests").glob("test_*.py") if "pytest.mark.slow" in p.read_text(encoding="utf-8")]
    assert {"test_end_to_end.py", "test_recipes.py", "test_distributed.py"} <= set(users)
