"""The layers contract: which ``ups`` modules may import which, read from the source with ``ast``.

Every ``ups`` import under ``src/ups`` counts: module level, function-local and relative ones.
Imports under ``if TYPE_CHECKING:`` never run, so they are no edges (``pytest -s`` lists them).
Importing ``ups.a.b`` runs ``ups/a/__init__.py`` first, so it is also an ("implied") edge to the
package ``ups.a``, except to the importer's own parent packages, which are running already.

Checked: no cycles between modules, nor between subpackages (the first name under ``ups``:
``ups.data``, ``ups.checkpoint``, ...); imports go only to the importer's layer or those below
(``LAYERS``, drawn also in docs/architecture.md); Lightning's private API only in
``ups.engines.lightning_adapter``; and each function-local ``ups`` import says why in a comment.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

LAYERS = [  # bottom to top
    ("foundation", {"ups", "ups.errors", "ups.atomic", "ups.deadline", "ups.locks", "ups.seal"}),
    ("config", {"ups.config"}),
    ("records", {"ups.checkpoint", "ups.runs", "ups.tracking"}),
    ("data", {"ups.data"}),
    ("models", {"ups.models"}),
    ("metrics", {"ups.metrics"}),
    ("stages", {"ups.stages"}),
    ("engines", {"ups.engines"}),
    ("application", {"ups.eval", "ups.pipeline", "ups.resolve", "ups.surrogate"}),
    ("cli", {"ups.cli", "ups.__main__"}),
]
# ``ups.load_surrogate``: the package's one lazy entry point upwards (``import ups`` stays light).
ENTRY_POINT = ("ups", "ups.surrogate")
ADAPTER = "ups.engines.lightning_adapter"  # the one module allowed Lightning's private API
LIGHTNING = {"lightning", "pytorch_lightning", "lightning_fabric"}
SRC = Path(__file__).resolve().parents[2] / "src"
FILES = {  # module name -> file
    ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
    for p in sorted((SRC / "ups").rglob("*.py"))
}
PACKAGES = {m for m, p in FILES.items() if p.name == "__init__.py"}


def parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def where(module: str, line: int) -> str:
    return f"{FILES[module].relative_to(SRC.parent)}:{line}"


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    local: bool  # inside a function
    implied: bool  # a parent package of what is imported

    def __str__(self) -> str:
        tags = ", ".join(t for t, on in (("function-local", self.local), ("implied", self.implied)) if on)
        return where(self.src, self.line) + (f" ({tags})" if tags else "")


class Scan(ast.NodeVisitor):
    """One module's ups imports (edges, TYPE_CHECKING, function-local), private Lightning uses, comments."""

    def __init__(self, name: str):
        self.name, self.local, self.checking = name, False, False
        self.edges, self.type_checking, self.local_imports, self.private = [], [], [], []
        text = FILES[name].read_text()
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        self.comments = {t.start[0] for t in tokens if t.type == tokenize.COMMENT}
        self.visit(ast.parse(text))

    def visit_FunctionDef(self, node):
        outer, self.local = self.local, True
        self.generic_visit(node)
        self.local = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node):
        test = node.test
        if (test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)) != "TYPE_CHECKING":
            return self.generic_visit(node)
        outer, self.checking = self.checking, True
        for stmt in node.body:
            self.visit(stmt)
        self.checking = outer
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node):
        self.add(node, [a.name for a in node.names], [])

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:  # relative: from the importer's package, one package up per further dot
            package = (self.name if self.name in PACKAGES else self.name.rpartition(".")[0]).split(".")
            package = ".".join(package[: len(package) - node.level + 1])
            base = f"{package}.{base}" if base else package
        names = [a.name for a in node.names]
        subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in FILES]  # submodules, else base
        self.add(node, subs + ([base] if len(subs) < len(names) else []), names)

    def add(self, node, targets: list[str], names: list[str]):
        if any(t.split(".")[0] in LIGHTNING for t in targets):
            if any(part.startswith("_") for t in targets + names for part in t.split(".")):
                self.private.append(f"{where(self.name, node.lineno)} imports {ast.unparse(node)}")
        targets = [t for t in targets if t.split(".")[0] == "ups"]
        if targets and self.local and not self.checking:
            self.local_imports.append(node)
        implied = {p for t in targets for p in parents(t) if p in PACKAGES} - set(parents(self.name))
        for dst, imp in [(t, False) for t in targets] + [(p, True) for p in sorted(implied - set(targets))]:
            if dst != self.name:
                edge = Edge(self.name, dst, node.lineno, self.local, imp)
                (self.type_checking if self.checking else self.edges).append(edge)

    def visit_Attribute(self, node):  # trainer._x, self.trainer._x, and a LightningModule's self._trainer
        value = node.value
        named = value.id if isinstance(value, ast.Name) else getattr(value, "attr", None)
        private = node.attr.startswith("_") and not node.attr.startswith("__")
        if node.attr == "_trainer" or (named == "trainer" and private):
            self.private.append(f"{where(self.name, node.lineno)} uses {ast.unparse(node)}")
        self.generic_visit(node)


SCANS = {name: Scan(name) for name in FILES}
EDGES = [e for s in SCANS.values() for e in s.edges]


def graph(key, implied: bool) -> dict[str, dict[str, list[Edge]]]:
    """node -> successor -> the imports behind that arrow (self-arrows dropped)."""
    out: dict[str, dict[str, list[Edge]]] = {}
    for e in EDGES:
        if key(e.src) != key(e.dst) and (implied or not e.implied):
            out.setdefault(key(e.src), {}).setdefault(key(e.dst), []).append(e)
    return out


def reachable(g, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in set(g.get(todo.pop(), ())) - seen:
            seen.add(w)
            todo.append(w)
    return seen


def cycles(g) -> list[str]:
    """For each strongly connected component, the shortest cycle through each of its nodes."""
    reach = {v: reachable(g, v) for v in g}
    found = set()
    for start in (v for v in g if v in reach[v]):
        scc = sorted(w for w in reach[start] if start in reach.get(w, ()))
        came, frontier = {}, [start]  # breadth first, until back at start
        while start not in came:
            step = [(v, w) for v in frontier for w in sorted(g[v]) if w in scc and w not in came]
            frontier = [w for v, w in step if came.setdefault(w, v) == v]
        ring = [came[start]]
        while ring[-1] != start:
            ring.append(came[ring[-1]])
        ring = ring[::-1]
        ring = ring[ring.index(min(ring)) :] + ring[: ring.index(min(ring))]  # one text per cycle
        hops = [f"  {a} -> {b}   [{'; '.join(map(str, g[a][b]))}]" for a, b in zip(ring, ring[1:] + ring[:1])]
        found.add((scc[0], f"cycle of {len(ring)} in {{{', '.join(scc)}}}:\n" + "\n".join(hops)))
    return [text for _, text in sorted(found)]


def test_no_module_cycles():
    found = cycles(graph(lambda m: m, implied=True))
    assert not found, "import cycles between modules:\n" + "\n".join(found)


def test_no_subpackage_cycles():
    found = cycles(graph(subpackage, implied=False))  # implied edges stay inside their subpackage
    assert not found, "import cycles between subpackages:\n" + "\n".join(found)


def test_layers_only_import_downwards():
    layer = {pkg: (i, name) for i, (name, members) in enumerate(LAYERS) for pkg in members}
    unplaced = sorted({subpackage(m) for m in [*FILES, *(e.dst for e in EDGES)]} - set(layer))
    assert not unplaced, f"put these in LAYERS: {unplaced}"
    up = [
        e
        for e in EDGES
        if not e.implied
        and layer[subpackage(e.dst)] > layer[subpackage(e.src)]
        and (e.src, e.dst) != ENTRY_POINT
    ]
    at = {m: f"{m} [{layer[subpackage(m)][1]}]" for m in FILES}
    lines = [f"{e}: {at[e.src]} -> {at.get(e.dst, e.dst)}" for e in up]
    assert not up, f"{len(up)} imports from a higher layer:\n" + "\n".join(lines)


def test_no_private_lightning_outside_adapter():
    uses = [u for name, s in SCANS.items() if name != ADAPTER for u in s.private]
    assert not uses, f"private Lightning API outside {ADAPTER}:\n" + "\n".join(uses)


def test_function_local_imports_are_explained():
    """A comment on the import's lines or the line above; one comment may head a run of such imports."""
    bare = []
    for s in SCANS.values():
        explained: set[int] = set()  # last lines of explained imports
        for node in s.local_imports:
            if set(range(node.lineno - 1, node.end_lineno + 1)) & (s.comments | explained):
                explained.add(node.end_lineno)
            else:
                bare.append(f"{where(s.name, node.lineno)}: {ast.unparse(node)}")
    assert not bare, f"{len(bare)} function-local ups imports say not why, in a comment:\n" + "\n".join(bare)


def test_type_checking_imports_are_listed():
    for e in (e for s in SCANS.values() for e in s.type_checking):
        print(f"TYPE_CHECKING only, not an edge: {e}: {e.src} -> {e.dst}")
