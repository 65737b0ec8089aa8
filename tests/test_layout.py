"""The import layering of the packages, read from their source (nothing is imported).

Dependencies point one way, `launch -> pipelines -> keras_invert` and
`launch -> keras_invert`, and no module reaches itself through its imports.
Imports inside functions count: deferring an import hides a dependency from
the reader, it does not remove it.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("keras_invert", "pipelines", "launch")
FORBIDDEN = {
    "keras_invert": ("pipelines", "launch"),
    "pipelines": ("launch",),
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, pathlib.Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imported_names(module: str, path: pathlib.Path, tree: ast.AST):
    """Every dotted name `module` imports, at any depth of its code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _imports() -> dict[str, set[str]]:
    """Module -> the modules of the three packages it imports (edges of the graph)."""
    sources = _sources()
    graph = {}
    for module, path in sources.items():
        targets = set()
        for name in _imported_names(module, path, ast.parse(path.read_text(), str(path))):
            # `from package import name` imports the module package.name when
            # there is one, else the package itself.
            while name and name not in sources and name.partition(".")[0] in PACKAGES:
                name = name.rpartition(".")[0]
            if name in sources and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        start = min(component)
        path, seen = [start], {start}
        # Walk inside the component until the walk closes on a module it passed.
        while True:
            following = min(target for target in graph[path[-1]] if target in component)
            if following in seen:
                cycles.append(path[path.index(following) :] + [following])
                break
            path.append(following)
            seen.add(following)
    return cycles


def test_imports_point_one_way_without_circles():
    graph = _imports()
    assert "keras_invert.registry" in graph and "launch.train" in graph  # The walk found them.
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if target.partition(".")[0] in FORBIDDEN.get(module.partition(".")[0], ())
    )
    circles = [" -> ".join(cycle) for cycle in _cycles(graph)]
    assert not upward, (
        "The library never imports pipelines or launch; pipelines never launch:\n"
        + ("\n".join(upward))
    )
    assert not circles, "Import circles:\n" + "\n".join(circles)


def test_the_check_sees_circles_and_imports_inside_functions():
    source = "def f():\n    from keras_invert import registry\n"
    tree = ast.parse(source)
    assert "keras_invert.registry" in set(
        _imported_names("keras_invert.decoders", ROOT / "keras_invert/decoders.py", tree)
    )
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# What runs on an accelerator machine that has JAX and no TensorFlow: the
# decoders, the run's optimiser and config, the reproduction's plan, the metrics
# and the benchmarks that train there. Loading them must not import TensorFlow
# (an import inside a function runs only when it is called, so it does not count).
ACCELERATOR_MODULES = (
    "keras_invert.decoders",
    "keras_invert.optimizers",
    "keras_invert.reproduction.plan",
    "keras_invert.metrics",
    "keras_invert.encoders",
    "benchmarks.bench_decoder_step",
    "benchmarks.bench_tap_training",
)


def _load_time_imports(module: str, path: pathlib.Path) -> set[str]:
    """The dotted names `module` imports when it is loaded: outside function bodies."""
    tree = ast.parse(path.read_text(), str(path))
    functions = [
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    ]
    deferred = {id(inner) for function in functions for inner in ast.walk(function)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in deferred or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        names |= set(_imported_names(module, path, ast.Module(body=[node], type_ignores=[])))
    return names


def _loaded_modules(roots, sources: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """`{module: its load-time imports}` for `roots` and all they load, packages included."""
    loaded, queue = {}, list(roots)
    while queue:
        module = queue.pop()
        if module in loaded or module not in sources:
            continue
        loaded[module] = _load_time_imports(module, sources[module])
        parents = [module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)]
        for name in loaded[module] | set(parents):
            while name and name not in sources and name.partition(".")[0] in sources:
                name = name.rpartition(".")[0]
            queue.append(name)
    return loaded


def test_what_runs_without_tensorflow_loads_none():
    sources = {
        _module_name(path): path
        for package in (*PACKAGES, "benchmarks")
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    loaded = _loaded_modules(ACCELERATOR_MODULES, sources)
    assert "keras_invert.config" in loaded and "keras_invert" in loaded  # The walk found them.
    offending = sorted(
        f"{module} imports {name}"
        for module, names in loaded.items()
        for name in names
        if name.partition(".")[0] == "tensorflow" or name.partition(".")[0] == "pipelines"
    )
    assert not offending, "Loaded on a machine without TensorFlow:\n" + "\n".join(offending)
    # The check sees an import that is loaded, and skips one deferred into a function.
    tree_path = ROOT / "keras_invert/decoders.py"
    assert _load_time_imports("keras_invert.decoders", tree_path) >= {"keras"}
