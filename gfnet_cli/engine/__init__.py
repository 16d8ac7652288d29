"""Engines: the loops behind the commands (``engine.train``, ``engine.evaluate``).

Import from the submodules (``from gfnet_cli.engine.evaluate import evaluate``): re-exporting
the functions here would shadow the submodules of the same names.
"""
