"""Built-in datasets made by numerical PDE solvers, written in PDEBench's HDF5 layouts.

``GENERATORS`` maps a task name to its ``Generator``; ``generate_dataset`` solves and writes one.
"""

from ups.data.generate.registry import GENERATORS, GenerateResult, generate_dataset
from ups.data.generate.spec import Generator, SolveResult

__all__ = ["GENERATORS", "GenerateResult", "Generator", "SolveResult", "generate_dataset"]
