"""Imports the built-in codec modules so that their ``@register_codec`` runs."""

from vcm_plugin.codecs import jpeg, vtm, vvc  # noqa: F401
