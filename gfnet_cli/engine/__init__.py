"""Loops over data: evaluation (``engine.evaluate``) and, in its own module, training.

Import from the submodules (``from gfnet_cli.engine.evaluate import evaluate``): re-exporting
the function here would shadow the submodule of the same name.
"""
