"""Home of the REGE `evaluate` module script (`rege.py`) and its metric card (`README.md`).

Load it with `transformers_emola.metrics.load_rege()` or `evaluate.load(<this folder>)`; importing this package
does not import `evaluate`.
"""
