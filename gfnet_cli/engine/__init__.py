"""Engines: the loops behind the commands (training, evaluation)."""
