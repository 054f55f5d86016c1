"""CI executes every notebook in smoke mode (UNLEARN_SMOKE=1); committed outputs say where they came from."""
import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "test_example_single_class_unlearning_100.ipynb", "test_example_single_class_unlearning_30.ipynb",
        "unlearn_comparison_toy_example.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_state_their_command_and_machine(path):
    """Notebooks are committed with the outputs of a real run; the first cell says which."""
    notebook = nbformat.read(path, as_version=4)
    assert any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "run it and commit it"
    intro = notebook.cells[0].source
    assert "- Command: `" in intro and "notebooks/run.py" in intro and path.name in intro
    assert "- Machine: " in intro


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    monkeypatch.setenv("UNLEARN_SMOKE", "1")
    monkeypatch.delenv("NOTEBOOK_FLAGS", raising=False)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on a failing cell
    assert any(o.get("output_type") == "display_data" for c in notebook.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("case", ["missing", "not JSON", "JSON but not a notebook", "a folder"])
def test_the_runner_refuses_a_path_that_is_not_a_notebook_in_one_line(case, tmp_path):
    import subprocess
    import sys
    path = {"missing": tmp_path / "gone.ipynb", "a folder": tmp_path}.get(case, tmp_path / "x.ipynb")
    if case == "not JSON":
        path.write_text("hello")
    elif case == "JSON but not a notebook":
        path.write_text('{"a": 1}')
    result = subprocess.run([sys.executable, str(ROOT / "notebooks" / "run.py"), str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(path) in result.stderr
