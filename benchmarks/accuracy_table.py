"""The accuracy benchmark's tables and curves, from its CSV alone (``accuracy.py`` writes it).

    python benchmarks/accuracy_table.py [--out benchmarks/results]

Writes ``<out>/accuracy.md``: per variant and budget, one row per task with both models' mean
headline error over the seeds, the geometric-mean ratio UPS / FNO with its 95% two-level
bootstrap interval and the verdict (``protocol.py``), the floors, and the cells' wall clocks;
and, for every task measured at more than one budget, ``<out>/curve_<task>.png``: headline
error against total wall clock for both models, the seeds' range as a band.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import ResultsFile, per_trajectory, ratio_interval, verdict  # noqa: E402

PAIRS = {"tuned": ("UPS", "FNO"), "defaults": ("UPS defaults", "FNO defaults")}
FLOORS = ("persistence", "linear_lstsq", "train mean", "UPS regression", "UPS corrected")


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (variant, budget, task) with both models in at least one cell."""
    cells = defaultdict(dict)
    for row in rows:
        cells[ResultsFile.key(row)][row["model"]] = row
    groups = defaultdict(list)
    for (task, _seed, budget, variant), models in cells.items():
        ups, fno = PAIRS[variant]
        if ups in models and fno in models:
            groups[(variant, float(budget), task)].append(models)
    out = []
    for (variant, budget, task), found in sorted(groups.items()):
        ups, fno = PAIRS[variant]
        pairs = [(per_trajectory(m[ups]), per_trajectory(m[fno])) for m in found]
        point, low, high = ratio_interval(pairs)
        mean = lambda name, found=found: [float(m[name][m[name]["headline"]]) for m in found if name in m]  # noqa: E731
        out.append(
            {
                "variant": variant,
                "budget": budget,
                "task": task,
                "metric": found[0][ups]["headline"],
                "seeds": sorted(int(m[ups]["seed"]) for m in found),
                "ups": mean(ups),
                "fno": mean(fno),
                "ratio": point,
                "low": low,
                "high": high,
                "verdict": verdict(low, high),
                "floors": {name: float(np.mean(mean(name))) for name in FLOORS if mean(name)},
                "totals": [(float(m[ups]["total_seconds"]), float(m[fno]["total_seconds"])) for m in found],
                "ups_stages": [json.loads(m[ups]["stage_seconds"] or "{}") for m in found],
                "ups_steps": [json.loads(m[ups]["stage_steps"] or "{}") for m in found],
                "fno_facts": [json.loads(m[fno]["facts"] or "{}") for m in found],
                "probes": [float(m[ups]["cpu_probe_s"]) for m in found],
                "dates": sorted({m[ups]["date"] for m in found}),
                "machine": found[0][ups]["machine"],
            }
        )
    return out


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{np.mean(values):.3g} ({min(values):.3g}–{max(values):.3g})"


def markdown(entries: list[dict]) -> str:
    lines = [
        "# Accuracy: UPS vs PDEBench's FNO",
        "",
        "Written by `python benchmarks/accuracy_table.py` from `accuracy.csv` "
        "(`python benchmarks/accuracy.py`); the protocol is `benchmarks/protocol.py`'s. Errors: the mean "
        "headline error over the seeds (their range), on 64 test trajectories per seed; ratio: the geometric "
        "mean over seeds of mean UPS error / mean FNO error, with its 95% two-level bootstrap interval; "
        "win / loss: the interval below / above 1. Totals: each model's whole wall clock, set-up included.",
        "",
    ]
    for (variant, budget), group in _by(entries, ("variant", "budget")).items():
        ups, fno = PAIRS[variant]
        lines += [
            f"## {variant}, {budget:g} s per model",
            "",
            f"| task | metric | seeds | {ups} | {fno} | {ups} / {fno} [95%] | verdict | floors | "
            f"totals UPS / FNO (s) |",
            "|---" * 9 + "|",
        ]
        for e in group:
            floors = ", ".join(f"{k} {v:.3g}" for k, v in e["floors"].items()) or "–"
            totals = ", ".join(f"{u:.0f}/{f:.0f}" for u, f in e["totals"])
            lines.append(
                f"| {e['task']} | {e['metric']} | {','.join(map(str, e['seeds']))} | {spread(e['ups'])} | "
                f"{spread(e['fno'])} | {e['ratio']:.2f} [{e['low']:.2f}, {e['high']:.2f}] | "
                f"{e['verdict']} | {floors} | {totals} |"
            )
        lines += ["", "UPS per stage (seconds / optimizer steps, per seed); FNO steps:", ""]
        for e in group:
            stages = "; ".join(
                ", ".join(f"{k} {s.get(k) or 0:.0f} s / {t.get(k) or 0}" for k in s)
                for s, t in zip(e["ups_stages"], e["ups_steps"])
            )
            steps = ", ".join(str(f.get("steps")) for f in e["fno_facts"])
            lines.append(
                f"- {e['task']}: {stages}; FNO {steps} steps ({e['machine']}; CPU probe "
                f"{min(e['probes']):.3f}–{max(e['probes']):.3f} s; {', '.join(e['dates'])})"
            )
        lines.append("")
    return "\n".join(lines)


def _by(entries: list[dict], keys: tuple[str, ...]) -> dict:
    out = defaultdict(list)
    for e in entries:
        out[tuple(e[k] for k in keys)].append(e)
    return out


def curves(rows: list[dict], out: Path, variant: str = "tuned") -> list[Path]:
    """``curve_<task>.png`` for every task with more than one budget of ``variant``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tasks = sorted({r["task"] for r in rows if r["variant"] == variant})
    for task in tasks:
        picked = [r for r in rows if r["task"] == task and r["variant"] == variant]
        if len({r["budget_s"] for r in picked}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for model, colour in zip(PAIRS[variant], ("tab:blue", "tab:orange")):
            points = defaultdict(list)
            for r in picked:
                if r["model"] == model:
                    points[float(r["budget_s"])].append((float(r["total_seconds"]), float(r[r["headline"]])))
            budgets = sorted(points)
            x = [np.mean([t for t, _ in points[b]]) for b in budgets]
            errors = [[e for _, e in points[b]] for b in budgets]
            ax.plot(x, [np.mean(e) for e in errors], "o-", color=colour, label=model)
            ax.fill_between(x, [min(e) for e in errors], [max(e) for e in errors], color=colour, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("total wall clock per model (s), set-up included")
        ax.set_ylabel(f"test {picked[0]['headline']} (mean over seeds; band: range)")
        ax.set_title(task)
        ax.legend()
        fig.tight_layout()
        path = out / f"curve_{task}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    rows = ResultsFile(args.out / "accuracy.csv").rows()
    if not rows:
        parser.error(f"no results in {args.out / 'accuracy.csv'}; run benchmarks/accuracy.py first")
    text = markdown(summarize(rows))
    (args.out / "accuracy.md").write_text(text + "\n")
    print(text)
    for path in curves(rows, args.out):
        print(f"curve: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
