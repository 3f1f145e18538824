"""LatentOperator: one conditioned time step in latent space."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ups.models.blocks import MLP, AdaLNTransformerBlock, log_frequencies, sinusoidal, token_distance_bias

# dt is embedded with frequencies 1..1000 (per unit of physical time), which resolves
# time steps from about 1e-3 to 1 without knowing the dataset's time unit in advance.
_DT_MAX_FREQ = 1000.0


class LatentOperator(nn.Module):
    """One time step in latent space: z_{t+1} = z_t + f(z_t; dt, task, PDE params).

    f is a stack of transformer blocks over the L tokens (with a learned token position
    embedding) whose LayerNorms are modulated by a conditioning vector
    c = MLP(sinusoidal(dt)) + Linear(params) + Embedding(task). The adaLN gates and the
    final projection start at zero, so the untrained operator is exactly the identity
    (persistence), the standard baseline a surrogate must beat.

    With ``locality`` > 0, every block's attention logits get ``token_distance_bias``: -1/2 (d /
    locality)^2 for tokens d cells apart on the task's token grid (``task_grids``, one per task),
    the distance wrapping around on a ``periodic`` task's domain. Each token then attends mostly
    to its neighbours from the first step, as a local PDE's update depends on them, and learned
    attention reaches further where it must. The bias is a buffer [n_tasks, L, L], saved with
    the weights, so a loaded operator keeps the geometry it was trained with.

    With ``subspace_dim`` 0 < k < L x D, every state the operator reads and writes is projected onto
    the k-dimensional principal subspace of the training latents (``fit_subspace``): the
    encoder's latents of real fields fill only a few of the L x D directions, and a rollout
    that drifts into the others compounds errors the decoder was never trained on. The mean
    and basis are buffers, saved with the weights; until they are fitted the projection is the
    identity.

    With a ``forcing`` encoder (a module mapping a static field and its coordinates to [B, L, D]
    tokens, e.g. a ``FieldEncoder``), a task's static field (the forcing of an incompressible
    Navier-Stokes file) conditions every step: ``encode_forcing`` turns it into tokens once per
    rollout, and each step adds ``forcing_gate`` of them to the tokens it reads. The gate starts at
    zero, so the untrained operator is still the identity. The forcing encoder trains with the
    operator; the autoencoder never sees the static field.
    """

    def __init__(
        self,
        tokens: int,
        dim: int,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        n_params: int = 0,
        n_tasks: int = 1,
        subspace_dim: int = 0,
        locality: float = 0.0,
        task_grids: Sequence[tuple[int, ...]] = (),
        periodic: Sequence[bool] = (),
        forcing: nn.Module | None = None,
    ):
        super().__init__()
        if subspace_dim < 0:
            raise ValueError(f"subspace_dim must be >= 0 (0: no projection), got {subspace_dim}")
        if locality < 0:
            raise ValueError(f"locality must be >= 0 (0: no locality bias), got {locality}")
        if locality and not (
            len(task_grids) == len(periodic) == n_tasks
            and all(math.prod(grid) == tokens for grid in task_grids)
        ):
            raise ValueError(
                f"locality needs one token grid of {tokens} cells and one periodic flag per task "
                f"({n_tasks}), got grids {list(task_grids)} and flags {list(periodic)}"
            )
        self.tokens, self.dim, self.n_params, self.n_tasks = tokens, dim, n_params, n_tasks
        self.pos = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        half = dim // 2
        self.register_buffer("dt_freqs", log_frequencies(half, _DT_MAX_FREQ), persistent=False)
        self.dt_embed = MLP(2 * half, dim)
        self.param_embed = nn.Linear(n_params, dim) if n_params > 0 else None
        self.task_embed = nn.Embedding(n_tasks, dim)
        self.blocks = nn.ModuleList(
            AdaLNTransformerBlock(dim, dim, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.forcing = forcing
        if forcing is not None:
            self.forcing_gate = nn.Linear(dim, dim)
            nn.init.zeros_(self.forcing_gate.weight)
            nn.init.zeros_(self.forcing_gate.bias)
        # a subspace as wide as the whole latent would project nothing
        self.subspace_dim = subspace_dim if subspace_dim < tokens * dim else 0
        if self.subspace_dim:
            self.register_buffer("subspace_mean", torch.zeros(tokens, dim))
            self.register_buffer("subspace_basis", torch.zeros(self.subspace_dim, tokens * dim))
            self.register_buffer("subspace_fitted", torch.zeros((), dtype=torch.bool))
        self.locality = locality
        if locality:
            self.register_buffer(
                "token_bias",
                torch.stack(
                    [token_distance_bias(grid, locality, wrap) for grid, wrap in zip(task_grids, periodic)]
                ),
            )
        # a Python copy of subspace_fitted, so that forward never reads a tensor to branch on
        self._subspace_ready = False
        self.register_load_state_dict_post_hook(_sync_subspace_ready)

    def forward(
        self, z: Tensor, dt: Tensor, params: Tensor, task_id: Tensor, forcing: Tensor | None = None
    ) -> Tensor:
        """z [B, L, D], dt [B] (physical time step), params [B, P], task_id [B] long, ``forcing`` [B, L, D]
        (``encode_forcing``'s tokens; None for a task without a static field) -> z_next [B, L, D]."""
        self._check(z, params)
        cond = self.condition(dt, params, task_id, batch=z.shape[0])
        z = self.project(z)
        h = z + self.pos
        if forcing is not None:
            h = h + self.forcing_gate(forcing)
        bias = self.token_bias[task_id].unsqueeze(1).to(h.dtype) if self.locality else None  # [B, 1, L, L]
        for block in self.blocks:
            h = block(h, cond, bias)
        return self.project(z + self.proj_out(self.norm_out(h)))

    def project(self, z: Tensor) -> Tensor:
        """z [B, L, D] -> its projection onto the fitted subspace (z itself when there is none)."""
        if not self._subspace_ready:
            return z
        basis = self.subspace_basis.to(z.dtype)
        offset = (z - self.subspace_mean).flatten(1)
        return self.subspace_mean + ((offset @ basis.T) @ basis).view_as(z)

    @torch.no_grad()
    def fit_subspace(self, latents: Tensor) -> float:
        """Fit the subspace to ``latents`` [N, L, D] (training states): their mean and top
        ``subspace_dim`` principal directions. Returns the fraction of their variance it keeps."""
        if not self.subspace_dim:
            raise ValueError("this operator was built with subspace_dim=0; there is no subspace to fit")
        if latents.dim() != 3 or latents.shape[1:] != (self.tokens, self.dim) or len(latents) < 2:
            raise ValueError(
                f"fit_subspace expects at least 2 latents of shape [N, L={self.tokens}, "
                f"D={self.dim}], got {tuple(latents.shape)}"
            )
        x = latents.double().flatten(1)
        mean = x.mean(dim=0)
        _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(self.subspace_dim, len(s))  # fewer samples than k: the missing directions stay zero
        self.subspace_mean.copy_(mean.view(self.tokens, self.dim))
        self.subspace_basis.zero_()[:k] = vt[:k]
        self.subspace_fitted.fill_(True)
        self._subspace_ready = True
        total = float(s.pow(2).sum())
        return float(s[:k].pow(2).sum()) / total if total > 0 else 1.0

    @torch.no_grad()
    def drop_subspace(self) -> None:
        """Stop projecting (the fitted subspace is discarded; a saved operator then loads without one)."""
        if self.subspace_dim:
            self.subspace_basis.zero_()
            self.subspace_mean.zero_()
            self.subspace_fitted.fill_(False)
        self._subspace_ready = False

    def rollout(
        self,
        z0: Tensor,
        dt: Tensor,
        params: Tensor,
        task_id: Tensor,
        steps: int,
        forcing: Tensor | None = None,
        correct: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Autoregressive rollout: z0 [B, L, D] -> [B, steps, L, D]; entry k is forward applied k+1
        times. With ``correct`` each step's state becomes ``state + correct(state)`` before the next
        (the corrector's sampled residual): the one latent rollout of training, validation and
        evaluation."""
        states, z = [], z0
        for _ in range(steps):
            z = self(z, dt, params, task_id, forcing)
            if correct is not None:
                z = z + correct(z)
            states.append(z)
        return torch.stack(states, dim=1)

    def encode_forcing(self, static: Tensor | None, coords: Tensor) -> Tensor | None:
        """A batch's static fields [B, *S, S] (normalised) at ``coords`` [B, *S, d] -> the forcing tokens
        [B, L, D] every step of its rollout reads; None without a static field. An operator built without a
        forcing encoder refuses one (its checkpoint could not condition on it)."""
        if static is None:
            return None
        if self.forcing is None:
            raise ValueError(
                "this LatentOperator was built without a forcing encoder, but the batch carries a "
                "static field; build it with the tasks that have one (forcing=...)"
            )
        return self.forcing(static, coords, amplitude=False)

    def condition(self, dt: Tensor, params: Tensor, task_id: Tensor, batch: int) -> Tensor:
        """dt [B], params [B, P], task_id [B] -> conditioning vector [B, D]."""
        cond = self.dt_embed(sinusoidal(dt, self.dt_freqs, batch))
        if self.param_embed is not None:
            cond = cond + self.param_embed(params)
        return cond + self.task_embed(task_id)

    def _check(self, z: Tensor, params: Tensor) -> None:
        if z.dim() != 3 or z.shape[1:] != (self.tokens, self.dim):
            raise ValueError(
                f"LatentOperator expects z of shape [B, L={self.tokens}, D={self.dim}], got {tuple(z.shape)}"
            )
        if self.n_params and tuple(params.shape) != (z.shape[0], self.n_params):
            raise ValueError(
                f"LatentOperator was built with n_params={self.n_params} and expects params "
                f"of shape [{z.shape[0]}, {self.n_params}], got {tuple(params.shape)}"
            )


def _sync_subspace_ready(module: LatentOperator, _incompatible_keys) -> None:
    module._subspace_ready = bool(module.subspace_dim and module.subspace_fitted)
