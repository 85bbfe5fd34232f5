"""Which packages an installed genlab has; everything else about it is in pyproject.toml.

It adds only its own names to site-packages: the package `genlab`, with Hydra's configs inside it (the clone's
top-level conf/ becomes genlab/conf), and its Optuna sweeper in Hydra's plugin namespace, `hydra_plugins`. src/ is
not installed: it holds only the clone's short commands (`python -m src.train`), which an install has as
`genlab-train`. The list is derived from the folders, so a new subpackage ships without an edit here
(tests/test_packaging.py builds the wheel and checks it).
"""

from setuptools import find_namespace_packages, setup

CODE = find_namespace_packages(include=["genlab", "genlab.*", "hydra_plugins.*"], exclude=["*__pycache__"])
CONFIGS = [
    "genlab.conf",
    *(f"genlab.conf.{name}" for name in find_namespace_packages("conf", exclude=["*__pycache__"])),
]

setup(packages=CODE + CONFIGS, package_dir={"genlab.conf": "conf"})
