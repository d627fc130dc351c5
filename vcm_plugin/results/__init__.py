"""What a run leaves behind, and the public API to read it: ``vcm_plugin.results.load(folder)``.

:mod:`vcm_plugin.results.store` holds the results store (one SQLite file per output folder,
one row per finished unit) and :data:`REFERENCE`, the codec label of the uncompressed
reference point; :mod:`vcm_plugin.results.tables` the one :func:`aggregate` of a point's units
and :func:`load`, the per-point and per-image tables of a run folder; :mod:`vcm_plugin.results.cache`
the shared unit cache (a store of the same rows that runs in other folders reuse).
"""

from vcm_plugin.results.store import REFERENCE, ResultsStore, StoreError, UnitRow
from vcm_plugin.results.tables import ImageRow, Point, PointLabel, Results, aggregate, load

__all__ = ["REFERENCE", "ImageRow", "Point", "PointLabel", "Results", "ResultsStore", "StoreError", "UnitRow",
           "aggregate", "load"]
