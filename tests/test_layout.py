"""The layout README "Layout" draws: each layer imports only its own and the layers below it, no
import loops, and every top-level module starts with a docstring and stays short."""
import ast

import pytest

from conftest import ROOT

# README "Layout", bottom to top
LAYERS = [
    ["errors", "devices", "seeding", "image_folder", "datasets", "models", "far_neighbours", "hparams", "train_utils", "metrics",
     "store"],
    ["schema", "report", "api_checks"],
    ["anti_sample"],
    ["methods", "unsir"],
    ["experiment"],
    ["distributed", "seeds"],
    ["tuning"],
    ["units", "flags", "cli"],
    ["single_class_unlearning", "multi_class_unlearning", "tune_unlearning", "toy_example"],
]
LAYER = {module: i for i, names in enumerate(LAYERS) for module in names}
MAX_LINES = 400


def source(module: str):
    """A top-level module's file (models/ is a package)."""
    return ROOT / "models" / "__init__.py" if module == "models" else ROOT / f"{module}.py"


def repo_imports(module: str) -> set[str]:
    """The repository's modules that `module` imports, at its top or inside functions."""
    tree = ast.parse(source(module).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return {name for name in names if name in LAYER}


def test_every_top_level_module_is_in_a_layer():
    assert {path.stem for path in ROOT.glob("*.py")} | {"models"} == set(LAYER)


@pytest.mark.parametrize("module", sorted(LAYER))
def test_a_module_imports_only_its_own_layer_and_those_below(module):
    upward = sorted(name for name in repo_imports(module) if LAYER[name] > LAYER[module])
    assert not upward, f"{module} (layer {LAYER[module]}) imports {upward} from above"


def test_there_is_no_import_loop():
    graph = {module: repo_imports(module) - {module} for module in LAYER}
    done, active = set(), []

    def visit(module):
        assert module not in active, f"import loop: {' -> '.join(active[active.index(module):] + [module])}"
        if module not in done:
            active.append(module)
            for name in graph[module]:
                visit(name)
            active.pop()
            done.add(module)
    for module in graph:
        visit(module)


@pytest.mark.parametrize("module", sorted(LAYER))
def test_each_module_says_what_it_is_for_and_stays_short(module):
    text = source(module).read_text()
    assert ast.get_docstring(ast.parse(text)), f"{module}.py has no docstring"
    assert len(text.splitlines()) <= MAX_LINES


def test_the_readme_opens_with_the_two_commands_and_the_default_runs_output():
    """README's first 40 lines: the install-and-run command, the test command .ci/run runs, and the
    default run's per-class table (a row per digit, then mean, std and worst)."""
    top = (ROOT / "README.md").read_text().splitlines()[:40]
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = ".venv/bin/python -m pytest -q tests"
    assert any(line.startswith("python3 -m venv .venv && ") and line.endswith("single_class_unlearning.py")
               for line in top)
    assert any(line.startswith(test_command) for line in top) and f"\n{test_command}\n" in ci
    rows = [line.split()[0] for line in top if line.strip() and line.split()[0] in
            {*map(str, range(10)), "mean", "std", "worst"}]
    assert rows == [*map(str, range(10)), "mean", "std", "worst"]
