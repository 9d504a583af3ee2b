"""The README's Layout table lists every module, and every module opens with a docstring."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_layout_lists_every_module():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = []
    for path in sorted((ROOT / "seqed").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py") or path.parent.name == "cli":
            continue  # packages are listed by directory; the CLI package as a whole
        if path.stem not in layout:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"README Layout does not mention: {missing}"


def test_every_module_opens_with_a_docstring():
    for path in sorted((ROOT / "seqed").rglob("*.py")):
        if path.name == "__init__.py" and not path.read_text().strip():
            continue
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), path
