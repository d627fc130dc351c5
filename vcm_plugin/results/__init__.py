"""What a run leaves behind, shared by the harness that writes it and the reports that read it.

:mod:`vcm_plugin.results.store` holds the results store (one SQLite file per output folder,
one row per finished unit) and :data:`~vcm_plugin.results.store.REFERENCE`, the codec label
of the uncompressed reference point.
"""
