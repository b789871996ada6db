"""ptflow: train, evaluate, serve and tune PyTorch classifiers from the command line.

Importing the package is cheap on purpose: torch and friends are imported by the modules
that need them, so `ptflow --help` answers without loading them.
"""

__version__ = "0.1.0"
