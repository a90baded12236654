"""The package's layers: lower folders never import higher ones, and no module imports itself in a circle.

Layers, lowest first: the base modules at the top of featstore/ (errors, home, hashing, paths, uri, user_csv), models/,
store/, embed/, search/, heads/, apps/, then the Python API (featstore/__init__.py, api/), serve/ (the web app) and the CLI. Every import
counts, including those inside functions.
"""
import ast
from pathlib import Path

import featstore

PACKAGE = Path(featstore.__file__).parent
LAYERS = ["base", "models", "store", "embed", "search", "heads", "apps", "api", "serve", "cli"]


def modules() -> dict[str, Path]:
    import featstore.cli

    found = {}
    for root, prefix in ((PACKAGE, "featstore"), (Path(featstore.cli.__file__).parent, "featstore.cli")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "featstore" or (len(parts) > 1 and parts[1] == "api"):
        return "api"
    if len(parts) > 2 or parts[1] in LAYERS:
        return parts[1]
    return parts[1] if parts[1] in LAYERS else "base"


def imports(module: str, path: Path, known: dict) -> set[str]:
    """Modules of featstore that `module` imports (a `from X import name` counts X.name when that is a module)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("featstore")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("featstore"):
                subs = {f"{target}.{a.name}" for a in node.names} & set(known)
                out |= subs or {target}
    return {m for m in out if m in known and m != module}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_no_upward_imports():
    upward = [f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, ts in graph().items() for t in ts
              if LAYERS.index(layer(t)) > LAYERS.index(layer(m))]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circles():
    g = graph()
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):                                   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v), on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_checks_can_fail():
    """The checks see lazy imports inside functions and package-relative ones."""
    g = graph()
    assert "featstore.store.db" in g["featstore.heads.fit"]
    assert any(t.startswith("featstore.") for t in g["featstore.cli.main"])
