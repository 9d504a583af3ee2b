"""The README's Layout table lists every module, every module opens with a docstring, and the imports point
the way the layers are stacked."""

import ast
from pathlib import Path
from typing import Callable

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


# -- import directions (STYLE.md habit 13): model code never imports data, training or CLI code --------
MODEL = {"encoders", "decoders", "layers", "attention", "embeddings", "memory", "bottleneck", "model", "dropout",
         "losses", "search"}
HOMES = {"precision", "errors", "vocab"}  # the cross-cutting concerns every layer may use
REGISTRIES = {"encoders", "decoders", "bottleneck", "noise", "optim", "tokenizer"}  # what config validates against
# The one arrow from model code up to configuration: `build_model(cfg)` maps a config to constructors.
ALLOWED = {("model", "config")}


def _seqed_imports(path: Path) -> set[str]:
    """The top-level seqed modules (or packages) that `path` imports, lazily or not: "data", "layers", ..."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "seqed"
                                     else [])
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "seqed" and len(parts) > 1:
                found.add(parts[1])
    return found


def _module(path: Path) -> str:
    """"layers" for seqed/layers.py, "encoders" for seqed/encoders/rnn.py."""
    rel = path.relative_to(ROOT / "seqed")
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _violations(allowed: Callable[[str, str], bool]) -> list[str]:
    bad = []
    for path in sorted((ROOT / "seqed").rglob("*.py")):
        module = _module(path)
        for target in sorted(_seqed_imports(path)):
            if target != module and (module, target) not in ALLOWED and not allowed(module, target):
                bad.append(f"{path.relative_to(ROOT)} imports seqed.{target}")
    return bad


def test_model_modules_import_only_model_modules_and_the_homes():
    bad = _violations(lambda m, t: m not in MODEL or t in MODEL | HOMES)
    assert not bad, bad


def test_data_imports_neither_training_nor_the_cli():
    bad = _violations(lambda m, t: m != "data" or t not in {"train", "update", "trainstate", "cli"})
    assert not bad, bad


def test_config_imports_only_the_registries_and_the_homes():
    bad = _violations(lambda m, t: m != "config" or t in REGISTRIES | HOMES | {"__version__"})
    assert not bad, bad


def test_the_import_scan_sees_lazy_and_package_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from seqed import errors\nimport seqed.data.store\ndef f():\n    from seqed.cli.io import x\n")
    assert _seqed_imports(f) == {"errors", "data", "cli"}
