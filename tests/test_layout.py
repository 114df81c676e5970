"""The shape of the code base: modules of at most 600 lines, no import circle between minilstm's modules, and
every document the code, the tests and the docs point to is in the repository."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "minilstm"
MAX_LINES = 600


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The minilstm modules ``name`` imports, at its top or inside functions (``from . import x`` counts as x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {module for module in out if module in known and module != name}


def test_no_module_is_over_600_lines():
    long = {str(path.relative_to(REPO)): n for path in modules().values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these along the data flow: {long}"


def test_no_import_circle():
    """A module never imports, directly or through others, a module that imports it (a package's ``__init__`` that
    imports its own submodules is not a circle: Python runs it first)."""
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    state = {}

    def visit(name, trail):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import circle: " + " -> ".join(trail[trail.index(name):] + [name])
        state[name] = "open"
        for other in sorted(graph[name]):
            visit(other, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_every_cited_document_exists():
    """Markdown paths under ``docs/`` and ``bench/`` named in the code, the kernels, the tests and the
    docs exist; nothing cites a design document outside the repository."""
    cited = re.compile(r"(?<![\w/.-])((?:docs|bench)/[\w./-]+\.md)")
    sources = [*PACKAGE.rglob("*.py"), *(REPO / "kernels").glob("*.cu"), *(REPO / "tests").glob("*.py"),
               *(REPO / "bench").rglob("*.py"), *(REPO / "docs").rglob("*.md"), REPO / "README.md"]
    missing = set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text or source == Path(__file__), f"{source} cites DESIGN.md: use docs/design.md"
        for match in cited.finditer(text):
            if not (REPO / match.group(1)).is_file():
                missing.add((str(source.relative_to(REPO)), match.group(1)))
    assert not missing, sorted(missing)
