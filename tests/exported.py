"""An exported surrogate (``ups export``) run the way its user runs it: the README's plain-torch
rollout in a fresh Python process where ``ups`` cannot be imported (the tests of the export)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

# -I: no PYTHONPATH, no user site; and an import hook refuses `ups`, which the environment has installed.
WITHOUT_UPS = """\
import sys
class NoUps:
    def find_spec(self, name, path=None, target=None):
        if name == "ups" or name.startswith("ups."):
            raise ImportError("ups is not installed here")
sys.meta_path.insert(0, NoUps())
try:
    import ups
except ImportError:
    pass
else:
    raise SystemExit("ups was importable")
import numpy as np
import torch
export_dir, u0_file, static_file, steps, out_file = sys.argv[1:]
{example}
u0 = np.load(u0_file)
static = None if static_file == "-" else np.load(static_file)
pred = rollout(export_dir, u0, int(steps), static=static)
meta = json.load(open(f"{{export_dir}}/surrogate.json"))
one_step = torch.export.load(f"{{export_dir}}/one_step.pt2").module()
params = torch.tensor(meta["params"]["default"]).expand(len(u0), -1)
with torch.no_grad():
    first = one_step(torch.from_numpy(u0), params, *([] if static is None else [torch.from_numpy(static)]))
np.savez(out_file, rollout=pred.numpy(), one_step=first.numpy())
"""


def example_block(text: str, after: str) -> str:
    """The first ```python block after the text ``after`` in ``text``."""
    return re.search(r"```python\n(.*?)```", text[text.index(after) :], re.S).group(1)


def rollout_without_ups(
    export_dir: Path, u0: np.ndarray, steps: int, workdir: Path, static: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The README's ``rollout(export_dir, u0, steps, static=static)`` [B, steps, *grid, C] (``rollout``)
    and the ``one_step`` program's u1 [B, *grid, C] (``one_step``), computed where ``ups`` is not
    importable."""
    example = example_block((Path(export_dir) / "README.md").read_text(), "```python")
    np.save(workdir / "u0.npy", u0)
    if static is not None:
        np.save(workdir / "static.npy", static)
    static_file = "-" if static is None else workdir / "static.npy"
    args = [export_dir, workdir / "u0.npy", static_file, steps, workdir / "pred.npz"]
    script = WITHOUT_UPS.format(example=example)
    done = subprocess.run(
        [sys.executable, "-I", "-c", script, *map(str, args)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(workdir / "pred.npz"))
