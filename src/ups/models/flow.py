"""Conditional flow matching over latent tokens: the velocity network, ODE samplers and
consistency-model sampling.

Rectified-flow convention throughout: flow time s in [0, 1]; x_0 is Gaussian noise at s = 0,
x_1 is data at s = 1; x_s = (1 - s) x_0 + s x_1, and the velocity target is x_1 - x_0.
Shapes: B batch, L tokens, D latent width. Samplers take any ``velocity(x [B, ...], s [B])``
and run under the caller's grad mode, so a consistency student can backpropagate through them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ups.models.blocks import MLP, AdaLNTransformerBlock, log_frequencies, sinusoidal

Velocity = Callable[[Tensor, Tensor], Tensor]

# Flow time and dt are embedded with frequencies 1..1000, as LatentOperator embeds dt: this
# resolves flow-time differences of about 1e-3, finer than any sampler here steps.
_MAX_FREQ = 1000.0


class FlowNet(nn.Module):
    """Velocity field v(x_s, s | context, dt, params, task) over latent tokens.

    Each token's input is Linear(concat(x, context)) plus a learned position embedding; a stack
    of adaLN transformer blocks is modulated by c = MLP(sinusoidal(s)) + MLP(sinusoidal(dt))
    + Linear(params) + Embedding(task). The output projection starts at zero, so the untrained
    net is the zero field and sampling from it returns the noise unchanged.
    """

    def __init__(
        self,
        tokens: int,
        dim: int,
        context_dim: int,
        hidden: int = 128,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        n_params: int = 0,
        n_tasks: int = 1,
    ):
        super().__init__()
        if hidden % heads:
            raise ValueError(
                f"FlowNet hidden={hidden} is not divisible by heads={heads}; "
                "choose hidden as a multiple of heads"
            )
        self.tokens, self.dim, self.context_dim = tokens, dim, context_dim
        self.n_params, self.n_tasks = n_params, n_tasks
        self.proj_in = nn.Linear(dim + context_dim, hidden)
        self.pos = nn.Parameter(torch.randn(tokens, hidden) * 0.02)
        half = hidden // 2
        self.register_buffer("freqs", log_frequencies(half, _MAX_FREQ), persistent=False)
        self.s_embed = MLP(2 * half, hidden, out=hidden)
        self.dt_embed = MLP(2 * half, hidden, out=hidden)
        self.param_embed = nn.Linear(n_params, hidden) if n_params > 0 else None
        self.task_embed = nn.Embedding(n_tasks, hidden)
        self.blocks = nn.ModuleList(
            AdaLNTransformerBlock(hidden, hidden, heads, mlp_ratio) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(hidden)
        self.proj_out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self, x: Tensor, s: Tensor, context: Tensor, dt: Tensor | None, params: Tensor, task_id: Tensor
    ) -> Tensor:
        """x [B, L, D], s [B] in [0, 1], context [B, L, context_dim], dt [B] or None,
        params [B, P] (ignored when n_params = 0), task_id [B] long -> velocity [B, L, D]."""
        self._check(x, s, context, dt, params, task_id)
        cond = self.condition(s, dt, params, task_id)
        h = self.proj_in(torch.cat([x, context], dim=-1)) + self.pos
        for block in self.blocks:
            h = block(h, cond)
        return self.proj_out(self.norm_out(h))

    def condition(self, s: Tensor, dt: Tensor | None, params: Tensor, task_id: Tensor) -> Tensor:
        """s [B], dt [B] or None, params [B, P], task_id [B] -> conditioning vector [B, hidden]."""
        batch = task_id.shape[0]
        cond = self.s_embed(sinusoidal(s, self.freqs, batch)) + self.task_embed(task_id)
        if dt is not None:
            cond = cond + self.dt_embed(sinusoidal(dt, self.freqs, batch))
        if self.param_embed is not None:
            cond = cond + self.param_embed(params)
        return cond

    def _check(
        self, x: Tensor, s: Tensor, context: Tensor, dt: Tensor | None, params: Tensor, task_id: Tensor
    ) -> None:
        if x.dim() != 3 or x.shape[1:] != (self.tokens, self.dim):
            raise ValueError(
                f"FlowNet expects x of shape [B, L={self.tokens}, D={self.dim}], got {tuple(x.shape)}"
            )
        batch = x.shape[0]
        expected = {
            "s": (s, (batch,)),
            "context": (context, (batch, self.tokens, self.context_dim)),
            "task_id": (task_id, (batch,)),
        }
        if dt is not None:
            expected["dt"] = (dt, (batch,))
        if self.n_params:
            expected["params"] = (params, (batch, self.n_params))
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"FlowNet (tokens={self.tokens}, dim={self.dim}, context_dim="
                    f"{self.context_dim}, n_params={self.n_params}) expects {name} of "
                    f"shape {list(shape)}, got {list(tensor.shape)}"
                )


def flow_matching_pair(x1: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One flow-matching training pair for data x1 [B, ...].

    Draws noise x0 ~ N(0, I) [B, ...] and then s ~ U(0, 1) [B] from ``generator`` (on its own
    device, then moved to x1's device and dtype), so the draw is the same wherever x1 lives.
    Returns (x_s [B, ...], s [B], target velocity x1 - x0 [B, ...], x0 [B, ...]).
    """
    x0 = torch.randn(x1.shape, generator=generator, device=generator.device).to(x1)
    s = torch.rand(x1.shape[0], generator=generator, device=generator.device).to(x1)
    s_b = _per_sample(s, x1)
    return (1 - s_b) * x0 + s_b * x1, s, x1 - x0, x0


def euler_step(velocity: Velocity, x: Tensor, s: Tensor, h: float) -> Tensor:
    """x [B, ...] at flow time s [B] -> x at s + h, with one velocity evaluation."""
    return x + h * velocity(x, s)


def heun_step(velocity: Velocity, x: Tensor, s: Tensor, h: float) -> Tensor:
    """x [B, ...] at s [B] -> x at s + h: Euler predictor, trapezoidal corrector (2 evaluations)."""
    v0 = velocity(x, s)
    v1 = velocity(x + h * v0, s + h)
    return x + 0.5 * h * (v0 + v1)


# method -> (one step, velocity evaluations per step)
SAMPLERS: dict[str, tuple[Callable[[Velocity, Tensor, Tensor, float], Tensor], int]] = {
    "euler": (euler_step, 1),
    "heun": (heun_step, 2),
}


def sample_flow(velocity: Velocity, noise: Tensor, steps: int, method: str = "heun") -> Tensor:
    """Integrate dx/ds = velocity(x, s) from s = 0 (x = noise [B, ...]) to s = 1 in ``steps``
    equal steps; returns x at s = 1 [B, ...]. Runs under the caller's grad mode."""
    step, _ = _sampler(steps, method)
    h, x = 1.0 / steps, noise
    for k in range(steps):
        s = torch.full((noise.shape[0],), k * h, device=noise.device, dtype=noise.dtype)
        x = step(velocity, x, s, h)
    return x


def velocity_evaluations(steps: int, method: str) -> int:
    """Velocity evaluations sample_flow makes: steps for euler, 2 * steps for heun."""
    _, per_step = _sampler(steps, method)
    return steps * per_step


def consistency_function(velocity: Velocity, x: Tensor, s: Tensor) -> Tensor:
    """Consistency map to the data end: f(x, s) = x + (1 - s) * velocity(x, s).

    x [B, ...], s [B] -> [B, ...]. f(x, 1) = x exactly (the boundary condition), and a student
    initialised from a flow-matching velocity starts as one Euler step to s = 1.
    """
    return x + (1 - _per_sample(s, x)) * velocity(x, s)


def consistency_sample(velocity: Velocity, noise: Tensor, steps: int, generator: torch.Generator) -> Tensor:
    """Consistency-model sampling from noise [B, ...] -> [B, ...] in 1 or 2 steps.

    1 step: f(noise, 0). 2 steps: x = f(noise, 0), re-noised to s = 0.5 with fresh noise from
    ``generator`` (x_mid = 0.5 * fresh + 0.5 * x), then f(x_mid, 0.5).
    """
    if steps not in (1, 2):
        raise ValueError(f"consistency_sample supports steps=1 or steps=2, got steps={steps}")
    batch = noise.shape[0]
    x = consistency_function(velocity, noise, noise.new_zeros(batch))
    if steps == 1:
        return x
    fresh = torch.randn(noise.shape, generator=generator, device=generator.device).to(noise)
    return consistency_function(velocity, 0.5 * fresh + 0.5 * x, noise.new_full((batch,), 0.5))


def _sampler(steps: int, method: str) -> tuple[Callable[[Velocity, Tensor, Tensor, float], Tensor], int]:
    if method not in SAMPLERS:
        raise ValueError(f"unknown flow sampling method {method!r}; choose one of {sorted(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"flow sampling needs steps >= 1, got steps={steps}")
    return SAMPLERS[method]


def _per_sample(s: Tensor, like: Tensor) -> Tensor:
    """s [B] -> [B, 1, ..., 1] broadcastable against ``like`` [B, ...]."""
    return s.reshape(-1, *([1] * (like.dim() - 1)))
