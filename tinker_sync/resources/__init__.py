"""API resources, one module each: ``client.checkpoints`` (checkpoints.py), ``training_runs.py``;
``types.py`` holds the msgspec Structs they return.

Importing this package imports nothing: each resource loads when its client
property is first used.
"""
