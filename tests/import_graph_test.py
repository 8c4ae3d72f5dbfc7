"""The library's module graph: no cycles, and the library never imports experiments.

The graph is read from the sources (``ast``), so the test sees every import,
at module level or inside a function. ``from package import name`` is an edge
to the submodule ``package.name`` when there is one, else to the package's
``__init__``, as Python resolves it.
"""

import ast
import functools
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "metric_learning"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """Every module of the project (library or experiments) that ``name`` imports."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in modules else base)
  return {m for m in found if m.split(".")[0] in ("metric_learning", "experiments")}


@functools.cache
def _graph():
  """The graph, parsed once for the module's tests (none of them changes it)."""
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in graph:
        continue
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1 or v in graph.get(v, ()):
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_graph_is_read_from_every_library_module():
  graph = _graph()
  assert {"metric_learning", "metric_learning.mining.anchors", "metric_learning._kernels",
          "metric_learning.losses.presets", "metric_learning.models.proxies"} <= set(graph)
  # a few known edges, so that a parser that finds nothing cannot pass
  assert "metric_learning.mining.blocks" in graph["metric_learning.mining.anchors"]
  assert "metric_learning._kernels" in graph["metric_learning.distances"]
  assert "metric_learning.losses.triplet" in graph["metric_learning.losses.registry"]


def test_no_cycles_between_library_modules():
  assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_library_code_never_imports_experiments(name):
  graph = _graph()
  assert not {m for m in graph[name] if m.split(".")[0] == "experiments"}


def test_test_modules_never_import_each_other():
  """Shared cases live in helper modules (cases.py, reference.py, ...): a test
  module that imported another would also collect and run its tests' setup."""
  tests = ROOT / "tests"
  test_modules = {p.stem for p in tests.glob("*_test.py")}
  offenders = []
  for path in sorted(tests.glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
      names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
               [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
      offenders += [f"{path.name} imports {n}" for n in names if n in test_modules]
  assert not offenders, offenders
  assert "losses_test" in test_modules          # the check sees the modules
