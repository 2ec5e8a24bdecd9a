"""Small data kdcache ships, installed as the package ``kdcache._data`` (see README.md here).

The folder stays ``data/`` in the source tree; pyproject.toml maps it to
``kdcache._data`` so an installed kdcache finds the files with
``importlib.resources`` from any working directory.
"""
