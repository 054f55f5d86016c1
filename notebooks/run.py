#!/usr/bin/env python3
"""Execute notebooks in place, keeping their outputs (nbclient; no Jupyter server needed).

    .venv/bin/python notebooks/run.py notebooks/unlearn_comparison_toy_example.ipynb

Environment variables reach the kernel: UNLEARN_SMOKE=1 (tiny sizes, as CI runs them) and, for
the two single-class notebooks, NOTEBOOK_FLAGS (the entry-script flags of the run to record).
"""
import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TIMEOUT_S = 4 * 3600  # per cell: a CPU run of CIFAR-10 cells takes tens of minutes


def main(paths: list[str]) -> int:
    if not paths:
        sys.exit(__doc__)
    notebooks = {}
    for path in map(Path, paths):  # every path checked before any notebook runs
        if not path.is_file():
            return fail(f"{path} is not a file; give .ipynb notebooks")
        try:
            notebooks[path] = nbformat.read(path, as_version=4)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, nbformat.reader.NotJSONError,
                nbformat.ValidationError, AttributeError, KeyError, TypeError) as error:
            return fail(f"{path} is not a notebook ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    for path, notebook in notebooks.items():
        NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        nbformat.write(notebook, path)
        print(f"executed {path}")
    return 0


def fail(message: str) -> int:
    print(f"notebooks/run.py: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
