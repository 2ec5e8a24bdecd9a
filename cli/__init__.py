"""The kdcache command line: a thin Typer app over the library (``kdcache_cli``)."""
