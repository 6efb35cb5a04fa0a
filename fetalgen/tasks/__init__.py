"""The tasks: one module per entry point, the only code (with ``fetalgen.cli``) that reads a Hydra config.

Each instantiates what its config names, calls the library with built objects and plain settings, and returns its
metrics (after lightning-hydra-template's ``src/train.py``).
"""
