"""Package discovery for the layout in pyproject.toml's [tool.setuptools.package-dir].

The source directories are not named after their packages (driver/ is `metagen`,
compiler/ is `metagen.compiler`, ...), which pyproject's own `packages.find` cannot
express: it names what it finds after the directory it searched. So each mapped
directory is searched here and its subpackages are named under the mapped package;
a new subpackage (a directory with an __init__.py) is in the wheel and the sdist
without being listed anywhere.
"""

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
PACKAGE_DIR = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]

setup(
    packages=sorted(
        {package for package in PACKAGE_DIR}
        | {f"{package}.{sub}" for package, path in PACKAGE_DIR.items() for sub in find_packages(str(ROOT / path))}
    ),
)
