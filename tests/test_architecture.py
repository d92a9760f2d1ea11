"""The layering rules of the README's Architecture section, checked on the source: only
``mpicnn/parallel/`` (and the MPI benchmarks) import mpi4py, ``kernels`` never imports
``mpicnn``, ``parallel`` never imports ``training`` or ``train``, and no module imports
another that imports it back (directly or through others, at any depth)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("mpicnn", "kernels")


def modules():
    """{dotted module name: path} of every module of the shipped packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                    found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return found


def imports(name, path, known):
    """The modules of ``known`` that module ``name`` imports (anywhere in its body), and
    the other top-level packages it imports."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    ours, others = set(), set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known and "." in t:
                t = t.rpartition(".")[0]
            if t in known:
                ours.add(t)
            elif t:
                others.add(t.split(".")[0])
    ours.discard(name)
    return ours, others


def graph():
    known = modules()
    return {n: imports(n, p, known) for n, p in known.items()}


def test_only_parallel_talks_to_mpi():
    offenders = [n for n, (_, others) in graph().items() if "mpi4py" in others
                 and not n.startswith("mpicnn.parallel") and n not in ("mpicnn.bench.allreduce",)]
    assert offenders == [], f"import mpi4py outside mpicnn/parallel/: {offenders}"


def test_layers_point_down():
    g = graph()
    assert not [n for n, (ours, _) in g.items() if n.startswith("kernels") and any(m.startswith("mpicnn") for m in ours)]
    up = [(n, m) for n, (ours, _) in g.items() if n.startswith("mpicnn.parallel")
          for m in ours if m.startswith("mpicnn.training") or m == "mpicnn.train"]
    assert up == [], f"mpicnn/parallel imports the trainer: {up}"


def test_no_import_circles():
    g = {n: {m for m in ours if not n.startswith(m + ".")} for n, (ours, _) in graph().items()}  # a package's
    # own __init__ is where its submodules are found, not a dependency of theirs
    cycles, state = [], {}

    def visit(n, path):
        state[n] = "open"
        for m in sorted(g[n]):
            if state.get(m) == "open":
                cycles.append(path[path.index(m):] + [m])
            elif m not in state:
                visit(m, path + [m])
        state[n] = "done"

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)
