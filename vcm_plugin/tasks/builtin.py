"""Imports the built-in task-model modules so that their ``@register_task_model`` runs."""
