"""The verbs of the `kdmech` command line, as plain functions (also usable from Python)."""
