"""The package's folders are its layers: each module imports only from its own layer or below,
and the module-level imports form no cycle (ARCHITECTURE.md draws the same picture). The tests
share code through tests/helpers/ only: no test module imports another, nor conftest.py."""

import ast
from pathlib import Path

import ptflow

ROOT = Path(ptflow.__file__).parent
TESTS = Path(__file__).resolve().parent

# Bottom to top. Root modules are shared helpers (errors, files, constants, plugins...), except
# config (TrainConfig, made from the model and dataset registries, beside training, whose options
# it holds) and the entry points that sit on top of everything.
LAYERS = {"": 0, "data": 1, "models": 2, "config": 3, "training": 3, "reports": 4, "serve": 4, "sweep": 5, "api": 6,
          "cli": 7, "__init__": 6, "__main__": 7}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("ptflow", *(p for p in parts if p != "__init__")))


def layer(module: str) -> int:
    parts = module.split(".")[1:]  # drop "ptflow"
    if not parts:
        return LAYERS["__init__"]
    if parts[0] in LAYERS and parts[0] != "":
        return LAYERS[parts[0]]
    return LAYERS[""]  # a root helper module


def imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ptflow":
            # from package import x: x may be a module of the package or a name defined in it
            folder = ROOT.joinpath(*node.module.split(".")[1:])
            found |= {f"{node.module}.{a.name}" if (folder / f"{a.name}.py").exists() or (folder / a.name).is_dir()
                      else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ptflow"}
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for name, path in modules().items():
        own = LAYERS.get(path.stem, layer(name)) if path.parent == ROOT else layer(name)
        for target in imports(path, top_level_only=False):
            if target != "ptflow" and layer(target) > own:
                wrong.append(f"{name} (layer {own}) imports {target} (layer {layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_module_level_imports_have_no_cycle():
    known = modules()
    graph = {name: {t for t in imports(path, top_level_only=True) if t in known and t != name}
             for name, path in known.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_every_folder_is_a_documented_layer():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {k for k in LAYERS if k and k not in ("api", "config", "__init__", "__main__")}
    for folder in folders:
        assert ast.get_docstring(ast.parse((ROOT / folder / "__init__.py").read_text())), folder


def test_the_resume_fingerprint_covers_every_module_of_every_layer(tmp_path):
    import shutil

    from ptflow.training.identity import source_fingerprint

    copy = tmp_path / "ptflow"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert source_fingerprint(copy) == source_fingerprint()
    for module in ("serve/metrics.py", "data/idx.py", "cli/commands.py", "config.py"):
        edited = copy / module
        original = edited.read_text()
        edited.write_text(original + "\n# an edit\n")
        assert source_fingerprint(copy) != source_fingerprint(), module
        edited.write_text(original)
    (copy / "sweep" / "space.py").rename(copy / "sweep" / "space2.py")  # a moved module counts too
    assert source_fingerprint(copy) != source_fingerprint()


def local_imports(path: Path, local: set[str]) -> set[str]:
    """The modules of tests/ that a file imports, anywhere in it ("." for a relative import)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add("." if node.level else node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
    return {name for name in found if name in local or name == "."}


def test_tests_share_code_through_helpers_only():
    local = {p.stem for p in TESTS.glob("*.py")} | {p.name for p in TESTS.iterdir() if (p / "__init__.py").exists()}
    assert {"helpers", "conftest", "test_architecture"} <= local  # the scan sees the tests folder
    seen = {path.relative_to(TESTS).as_posix(): local_imports(path, local) for path in sorted(TESTS.rglob("*.py"))}
    wrong = [f"{name} imports {', '.join(sorted(found - {'helpers'}))}" for name, found in seen.items()
             if found - {"helpers"}]
    assert not wrong, "\n".join(wrong)
    assert "helpers" in seen["conftest.py"] and "helpers" in seen["test_resume.py"]  # imports are found at all
