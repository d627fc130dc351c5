"""Imports the built-in codec modules so that their ``@register_codec`` runs."""

from vcm_plugin.codecs import jpeg, vvc  # noqa: F401
