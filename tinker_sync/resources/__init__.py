"""API resources, one module each: ``client.checkpoints`` (checkpoints.py; the archive flow's
signed URL and body reader in _archive.py, the export flow in _export.py, checkpoint paths in
_paths.py), ``client.training_runs``, ``client.sessions``, ``client.futures``,
``client.sampling``, ``client.health`` and ``client.server``; ``types.py`` holds the msgspec
Structs and ``_resource.py`` the base class and the views.

Importing this package imports nothing: each resource loads when its client
property is first used.
"""
