"""``ups predict``: parse, then call ``ups.surrogate.predict``."""

from __future__ import annotations

import argparse

from ups.cli.flags import add_request_flags, request_from
from ups.config.requests import PredictionRequest


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="roll a trained run out from the starts in a PDEBench-layout file",
        description="Read initial conditions (and context frames, PDE parameters, static fields) from a "
        "PDEBench-layout HDF5 file, roll the run's operator out from them (or solve its steady task "
        "for the coefficients of a Darcy file) and write the predictions in the same layout "
        "(docs/api.md). Input that does not fit the run is refused before any work.",
    )
    add_request_flags(p, PredictionRequest)
    p.set_defaults(run=_predict, command="predict")


def _predict(args: argparse.Namespace) -> int:
    # lazy: torch, the surrogate and h5py load only when the command runs, not for --help
    from ups.surrogate.predict import predict

    written = predict(request_from(PredictionRequest, args))
    print(f"predictions: {written}")
    return 0
