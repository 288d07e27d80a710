"""Helpers of the cookiecutter hooks, importable so the template tests can test them."""
