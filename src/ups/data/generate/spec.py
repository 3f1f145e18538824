"""What a built-in dataset generator is: its name, defaults, file name and solver."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm


@dataclass(frozen=True)
class SolveResult:
    """Arrays one generator produced, float32, in PDEBench's axis order.

    Transient tasks of one channel: ``solution`` [N, T, *S], ``coords`` {"x": [X], ("y": [Y],)
    "t": [T]}; of several (``channels`` names them): ``solution`` [N, T, *S, C].
    Steady 2D tasks: ``solution`` [N, 1, X, Y], ``coefficient`` [N, X, Y],
    ``coords`` {"x": [X], "y": [Y]}.
    """

    solution: np.ndarray
    coords: dict[str, np.ndarray]
    coefficient: np.ndarray | None = None
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Generator:
    """A registered PDE dataset: defaults, PDEBench file name and the solver.

    ``solve(n, nx, nt, seed, params, progress) -> SolveResult`` is deterministic in its
    arguments. ``positive_params`` must be > 0; every parameter must be finite.
    """

    name: str
    description: str
    default_n: int
    default_nx: int
    default_nt: int
    default_params: dict[str, float]
    file_name: Callable[[dict], str]
    solve: Callable[..., SolveResult]
    positive_params: frozenset[str] = field(default_factory=frozenset)
    min_nx: int = 4
    steady: bool = False
    periodic: bool = False  # the domain wraps around (as in PDEBench's files of the same PDE)
    transpose_symmetric: bool = False  # swapping x and y maps solutions to solutions (on a square grid)
    # What layout "pdebench" writes, as PDEBench stores this family: "single" (``tensor``),
    # "darcy", "cfd" (one dataset per variable) or "multigroup".
    pdebench_layout: str = "single"

    @property
    def layouts(self) -> tuple[str, ...]:
        """ "pdebench" (PDEBench's own layout for the family) and, for a transient family,
        "multigroup"."""
        return ("pdebench",) if self.steady else ("pdebench", "multigroup")

    def file_format(self, layout: str) -> str:
        """What ``layout`` writes: one of "single", "darcy", "cfd", "multigroup"."""
        return self.pdebench_layout if layout == "pdebench" else layout


def pdebench_number(value: float) -> str:
    """A parameter as PDEBench writes it in file names: Python's ``str`` of a float (0.01, 1.0)."""
    return str(float(value))


def cell_centres(n: int) -> np.ndarray:
    """Cell centres of n equal cells of (0, 1), float64 [n]."""
    return (np.arange(n) + 0.5) / n


def progress_bar(n: int, desc: str, progress: bool) -> tqdm:
    """A tqdm bar over n samples on stderr; silent when ``progress`` is False."""
    return tqdm(total=n, desc=desc, unit="sample", file=sys.stderr, disable=not progress)


def chunks(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Consecutive pieces of ``indices`` of at most ``size`` entries."""
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def fill_in_chunks(
    out: np.ndarray, chunk: int, desc: str, progress: bool, compute: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``out[rows] = compute(rows)`` over consecutive chunks of sample indices, with a progress bar."""
    with progress_bar(len(out), desc, progress) as bar:
        for rows in chunks(np.arange(len(out)), chunk):
            out[rows] = compute(rows)
            bar.update(len(rows))
    return out
