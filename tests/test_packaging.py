"""What `pip install` takes from pyproject.toml: every package folder and its data files."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package):
    """The folder of ``package``: its own package-dir entry, else its parent's folder."""
    head, _, tail = package.rpartition(".")
    own = SETUPTOOLS["package-dir"].get(package)
    return ROOT / own if own else _folder(head) / tail


def test_every_package_folder_is_listed_and_exists():
    """(A sub-package left out of `packages` would be missing from a regular install.)"""
    folders = {ROOT / d for d in SETUPTOOLS["package-dir"].values()}
    found = {init.parent for top in folders for init in top.rglob("__init__.py")
             if "__pycache__" not in init.parts}
    assert {_folder(p) for p in SETUPTOOLS["packages"]} == found


def test_the_data_files_are_package_data():
    """The traces' data (golden/data) and the default configuration are installed."""
    wanted = {ROOT / "gen" / "default_config.toml",
              *(p for p in (ROOT / "golden" / "data").rglob("*") if p.is_file())}
    installed = {path for package, patterns in SETUPTOOLS["package-data"].items() for pattern in patterns
                 for path in _folder(package).glob(pattern) if path.is_file()}
    assert len(wanted) >= 4 and wanted - installed == set()
