"""The layout the design card names, and the import rules the code keeps: imports run one way, training
depends on nothing that applies or reports a trained network."""

import ast
import pathlib
import tomllib

from tests.support import ROOT

PACKAGE = ROOT / "jaxcxr"


def test_the_top_level_is_the_design_cards():
  for name in ("pyproject.toml", "README.md", "run.py", "jaxcxr", "configs", "tests"):
    assert (ROOT / name).exists(), name
  assert not (PACKAGE / "configs").exists()  # one home: configs/ at the top, installed as jaxcxr.configs


def test_every_package_folder_is_installed():
  listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
  found = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")} | {"jaxcxr.configs"}
  assert listed == found


def _module(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
  """Every jaxcxr module and the jaxcxr modules it imports (at any depth of its code)."""
  modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxcxr"):
        found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                  for a in node.names}
      elif isinstance(node, ast.Import):
        found |= {a.name for a in node.names if a.name.startswith("jaxcxr")}
    # A package's __init__ is imported with it, so `jaxcxr.x` alone (the package itself) is no edge.
    graph[name] = {m for m in found if m in modules and m != name and m != "jaxcxr"}
  return graph


def test_imports_have_no_cycle():
  graph, done, path = _imports(), set(), []

  def visit(module):
    if module in path:
      raise AssertionError(f"import cycle: {' -> '.join(path[path.index(module):] + [module])}")
    if module in done:
      return
    path.append(module)
    for imported in graph[module]:
      visit(imported)
    path.pop()
    done.add(module)

  for module in graph:
    visit(module)


def test_training_imports_nothing_that_applies_or_reports_a_network():
  imported = _imports()["jaxcxr.train"]
  forbidden = {m for m in imported if m.startswith("jaxcxr.report")
               or m in ("jaxcxr.predict", "jaxcxr.explain", "jaxcxr.inference", "jaxcxr.experiment")}
  assert not forbidden, forbidden
  assert "jaxcxr.train" not in _imports()["jaxcxr.predict"]
