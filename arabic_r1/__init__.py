"""arabic_r1: reproduce, inspect and extend Arabic-DeepSeek-R1 (arXiv 2604.06421).

Importing the package is cheap (no torch); heavy libraries are imported by the functions that need them.
"""

__version__ = "0.1.0"
