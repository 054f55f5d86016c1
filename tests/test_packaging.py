"""pyproject.toml: `pip install -e .` makes the library importable from a user's own project."""
import os
import subprocess
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

from conftest import ROOT

ENTRY_SCRIPTS = {"single_class_unlearning", "multi_class_unlearning", "tune_unlearning"}


def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_holds_every_library_module_and_reads_requirements_txt():
    """A module added at the top level and left out of py-modules would be missing from an install."""
    setuptools = project()["tool"]["setuptools"]
    top_level = {path.stem for path in ROOT.glob("*.py")} - ENTRY_SCRIPTS
    assert sorted(setuptools["py-modules"]) == sorted(top_level)
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert setuptools["packages"] == sorted(packages) == ["models"]
    assert setuptools["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}


@pytest.mark.slow
def test_an_editable_install_imports_the_api_from_another_folder(tmp_path):
    """`pip install -e .` into a new environment (offline: no dependencies fetched, this
    environment's packages lent to it by a .pth file), then the README's own-model import from a
    folder outside the repository, which finds this checkout's modules."""
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    target_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    Path(target_site, "lent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, setuptools, pip
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--no-index", "-e", str(ROOT)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "my_project"
    elsewhere.mkdir()
    check = ("import anti_sample, models, datasets\n"
             "print(anti_sample.__file__, models.__file__, datasets.__file__)\n"
             "print(len(anti_sample.unlearn.__doc__) > 0, models.list_models())\n")
    result = subprocess.run([python, "-c", check], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-3000:]
    files, api = result.stdout.splitlines()
    assert files.split() == [str(ROOT / "anti_sample.py"), str(ROOT / "models" / "__init__.py"),
                             str(ROOT / "datasets.py")]
    assert api.startswith("True") and "SmallCNN" in api
