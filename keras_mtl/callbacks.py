"""Callbacks that log what only a multi-task model knows (filled in below)."""
