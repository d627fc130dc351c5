"""The version of vcm-plugin, in a module that imports nothing.

The one place the version is written: ``pyproject.toml`` reads it from here
(``[tool.setuptools.dynamic]``), and :mod:`vcm_plugin` re-exports it as
``vcm_plugin.__version__``. Modules of the package import it from here, not through the
root package, which imports most of the package.
"""

__version__ = "0.1.0"
