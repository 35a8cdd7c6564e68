"""Benchmarks of tre-audit, run as scripts (``.venv/bin/python benchmarks/NAME.py``).

A regular package, not a namespace one: CrypTen 0.4.1 installs a top-level ``benchmarks``
package of its own into site-packages, which would otherwise win the import.
"""
