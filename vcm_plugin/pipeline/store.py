"""Compatibility: the results store moved to :mod:`vcm_plugin.results.store`.

The report writers read it, and must not import the pipeline; this module re-exports its
public names for existing imports.
"""

from vcm_plugin.results.store import SCHEMA_VERSION, ResultsStore, StoreError, UnitRow, unit_key

__all__ = ["SCHEMA_VERSION", "ResultsStore", "StoreError", "UnitRow", "unit_key"]
