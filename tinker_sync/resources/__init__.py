"""API resources, one module each: ``client.checkpoints`` (checkpoints.py; the archive flow's
signed URL and body reader in _archive.py, checkpoint paths in _paths.py); ``types.py`` holds
the msgspec Structs and ``_resource.py`` the base class.

Importing this package imports nothing: each resource loads when its client
property is first used.
"""
