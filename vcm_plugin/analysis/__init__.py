"""Task appropriateness ρ of a model's layers (the project's estimator, pluggable), t-SNE views, reports.

See :mod:`vcm_plugin.analysis.rho` for the definition (the project's, not the paper's)
and ``vcm appropriateness`` (:mod:`vcm_plugin.cli.appropriateness`) for the command.
"""
