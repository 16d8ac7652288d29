"""The library function behind each inference command: what ``gfnet CMD`` calls.

``predict`` (predict), ``embed`` (embed), ``evaluate`` (evaluate), ``export`` (export_model),
``profile`` (profile, model_table). ``finetune`` is in :mod:`gfnet_cli.engine.train` and the
paper's analyses in :mod:`gfnet_cli.analysis`. The public names are ``gfnet_cli.<name>``;
import from the submodules inside the package (this one re-exports nothing, so a function
never shadows the module of the same name).
"""
