"""The distribution ships every package folder: pyproject's explicit `packages` list matches the tree."""

from __future__ import annotations

import tomllib

from tests.support.paths import ROOT


def _packages_on_disk(package_dir: dict[str, str]) -> set[str]:
    found: set[str] = set()
    for name, folder in package_dir.items():
        root = ROOT / folder
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            found.add(".".join((name, *relative)))
    return found


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _packages_on_disk(config["package-dir"])


def test_no_top_level_service_or_worker_module_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(name == "prunebench" or name.startswith("prunebench.") for name in config["packages"])
