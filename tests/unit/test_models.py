"""GridEncoder, AnyPointDecoder and LatentOperator: shapes, invariances, init and trainability."""

from __future__ import annotations

import math

import pytest
import torch

from ups.models import AnyPointDecoder, GridEncoder, LatentOperator
from ups.models.blocks import token_distance_bias
from ups.models.encoder import AMPLITUDE_FLOOR, field_amplitude


def grid_coords(batch: int, *sizes: int) -> torch.Tensor:
    """Regular grid in [0,1]^d: [B, *sizes, d]."""
    axes = [torch.linspace(0, 1, n) for n in sizes]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return coords.expand(batch, *coords.shape)


def small_operator(**kwargs) -> LatentOperator:
    return LatentOperator(tokens=8, dim=32, depth=2, heads=4, **kwargs)


def operator_inputs(batch: int = 3, n_params: int = 2):
    return (
        torch.randn(batch, 8, 32),
        torch.full((batch,), 0.05),
        torch.randn(batch, n_params),
        torch.zeros(batch, dtype=torch.long),
    )


@pytest.mark.parametrize("sizes", [(64,), (50,), (33,), (16, 16), (18, 13)])
def test_encoder_shapes_for_1d_2d_and_odd_grids(sizes):
    torch.manual_seed(0)
    enc = GridEncoder(in_channels=2, spatial_dims=len(sizes), tokens=6, dim=16, hidden=32, kernel_size=5)
    z = enc(torch.randn(3, *sizes, 2), grid_coords(3, *sizes))
    assert z.shape == (3, 6, 16)
    assert torch.isfinite(z).all()


def test_encoder_same_weights_encode_two_resolutions_of_one_field():
    torch.manual_seed(0)
    enc = GridEncoder(in_channels=1, spatial_dims=1, tokens=8, dim=32, hidden=32, kernel_size=5)
    fine, coarse = grid_coords(2, 128), grid_coords(2, 64)
    field = lambda x: torch.sin(2 * torch.pi * x)  # noqa: E731
    z_fine, z_coarse = enc(field(fine), fine), enc(field(coarse), coarse)
    assert z_fine.shape == z_coarse.shape == (2, 8, 32)
    assert torch.isfinite(z_fine).all() and torch.isfinite(z_coarse).all()


def test_encoder_rejects_wrong_channel_count_with_shape_in_message():
    enc = GridEncoder(in_channels=2, spatial_dims=1, tokens=4, dim=16, hidden=32)
    with pytest.raises(ValueError, match=r"C in \[2\].*\(1, 20, 3\)"):
        enc(torch.randn(1, 20, 3), grid_coords(1, 20))


def test_tasks_with_other_channel_counts_share_everything_but_stem_and_head():
    torch.manual_seed(0)
    enc = GridEncoder(in_channels=[1, 3, 1], spatial_dims=1, tokens=4, dim=16, hidden=32)
    dec = AnyPointDecoder(dim=16, coord_dims=1, out_channels=[3, 1], hidden=32, depth=1, fourier_features=4)
    assert sorted(enc.stems) == sorted(dec.heads) == ["c1", "c3"]
    one, three = torch.randn(2, 20, 1), torch.randn(2, 20, 3)
    z1, z3 = enc(one, grid_coords(2, 20)), enc(three, grid_coords(2, 20))
    assert z1.shape == z3.shape == (2, 4, 16)  # one latent space
    assert dec(z1, grid_coords(2, 9).reshape(2, 9, 1), channels=3).shape == (2, 9, 3)
    assert dec(z3, grid_coords(2, 9).reshape(2, 9, 1), channels=1).shape == (2, 9, 1)
    z3.sum().backward()  # only the 3-channel stem takes part in a 3-channel batch
    assert enc.stems["c1"].weight.grad is None and enc.stems["c3"].weight.grad is not None
    with pytest.raises(ValueError, match=r"heads for \[1, 3\] channel\(s\); pass channels="):
        dec(z1, grid_coords(2, 9).reshape(2, 9, 1))


@pytest.mark.parametrize("coord_dims, n_points", [(1, 1), (1, 37), (2, 200)])
def test_decoder_accepts_any_number_of_points(coord_dims, n_points):
    torch.manual_seed(0)
    dec = AnyPointDecoder(
        dim=16, coord_dims=coord_dims, out_channels=3, hidden=32, depth=2, fourier_features=4
    )
    out = dec(torch.randn(2, 5, 16), torch.rand(2, n_points, coord_dims))
    assert out.shape == (2, n_points, 3)


def test_decoder_value_at_a_point_does_not_depend_on_other_queried_points():
    torch.manual_seed(0)
    dec = AnyPointDecoder(dim=16, coord_dims=2, out_channels=2, hidden=32, depth=2, fourier_features=4).eval()
    z, points, others = torch.randn(2, 5, 16), torch.rand(2, 7, 2), torch.rand(2, 50, 2)
    alone = dec(z, points)
    together = dec(z, torch.cat([others[:, :20], points, others[:, 20:]], dim=1))[:, 20:27]
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


def test_operator_is_exactly_the_identity_at_init():
    torch.manual_seed(0)
    op = small_operator(n_params=2, n_tasks=3)
    z, dt, params, _ = operator_inputs()
    task = torch.tensor([0, 1, 2])
    assert torch.equal(op(z, dt, params, task), z)


def test_operator_without_pde_params_accepts_empty_params():
    op = small_operator(n_params=0)
    z, dt, _, task = operator_inputs()
    assert torch.equal(op(z, dt, torch.empty(3, 0), task), z)


def test_operator_rejects_params_of_wrong_width():
    op = small_operator(n_params=2)
    z, dt, _, task = operator_inputs()
    with pytest.raises(ValueError, match=r"n_params=2.*\(3, 1\)"):
        op(z, dt, torch.randn(3, 1), task)


def trained_operator() -> LatentOperator:
    """A few Adam steps move the zero-initialised layers off zero, so f is no longer 0."""
    torch.manual_seed(0)
    op = small_operator(n_params=2)
    opt = torch.optim.Adam(op.parameters(), lr=1e-2)
    z, dt, params, task = operator_inputs()
    target = torch.randn_like(z)
    for _ in range(3):
        opt.zero_grad()
        ((op(z, dt, params, task) - target) ** 2).mean().backward()
        opt.step()
    return op


def test_operator_every_parameter_is_trained_within_three_steps():
    torch.manual_seed(0)
    op = small_operator(n_params=2)
    before = {name: p.detach().clone() for name, p in op.named_parameters()}
    after = dict(trained_operator().named_parameters())
    unchanged = [name for name, p in after.items() if torch.equal(p.detach(), before[name])]
    assert unchanged == []


def test_rollout_step_k_equals_forward_applied_k_times():
    op = trained_operator()
    z, dt, params, task = operator_inputs()
    with torch.no_grad():
        traj = op.rollout(z, dt, params, task, steps=4)
        assert traj.shape == (3, 4, 8, 32)
        state = z
        for k in range(4):
            state = op(state, dt, params, task)
            torch.testing.assert_close(traj[:, k], state, atol=0, rtol=0)
        assert not torch.allclose(traj[:, 0], z)


def test_operator_output_depends_on_dt_params_and_task():
    torch.manual_seed(0)
    op = small_operator(n_params=2, n_tasks=2)
    for p in op.parameters():  # move every layer off its zero init
        torch.nn.init.normal_(p, std=0.1)
    z, dt, params, task = operator_inputs()
    base = op(z, dt, params, task)
    assert not torch.allclose(op(z, dt * 2, params, task), base)
    assert not torch.allclose(op(z, dt, params + 1, task), base)
    assert not torch.allclose(op(z, dt, params, task + 1), base)


def states_in_a_subspace(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n latents [n, 8, 32] = mean + combinations of k fixed directions; returns (latents, mean, basis)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(8 * 32, generator=g)
    basis = torch.linalg.qr(torch.randn(8 * 32, k, generator=g)).Q.T  # [k, 256], orthonormal rows
    coeffs = torch.randn(n, k, generator=g) * torch.linspace(3, 1, k)
    return (mean + coeffs @ basis).view(n, 8, 32), mean, basis


def test_operator_subspace_is_the_identity_until_fitted():
    projected = small_operator(n_params=2, subspace_dim=5)
    for p in projected.parameters():
        torch.nn.init.normal_(p, std=0.1)
    plain = small_operator(n_params=2)
    plain.load_state_dict({k: v for k, v in projected.state_dict().items() if not k.startswith("subspace")})
    z, dt, params, task = operator_inputs()
    assert torch.equal(projected(z, dt, params, task), plain(z, dt, params, task))


def test_operator_subspace_fit_keeps_states_in_it_and_removes_the_rest():
    states, mean, basis = states_in_a_subspace(40, 5)
    op = small_operator(n_params=2, subspace_dim=5)
    assert op.fit_subspace(states) == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(op.project(states), states, atol=1e-4, rtol=0)
    off = torch.randn(40, 8, 32)
    off = off - ((off.flatten(1) @ basis.T) @ basis).view_as(off)  # orthogonal to the subspace
    torch.testing.assert_close(op.project(states + off), states, atol=1e-4, rtol=0)
    for p in op.parameters():  # a trained operator: its outputs still lie in the subspace
        torch.nn.init.normal_(p, std=0.1)
    _, dt, params, task = operator_inputs(batch=40)
    out = op(states + off, dt, params, task)
    residue = (out.flatten(1) - mean) - ((out.flatten(1) - mean) @ basis.T) @ basis
    assert residue.abs().max() < 1e-4 and not torch.allclose(out, states, atol=1e-2)


def test_operator_subspace_reports_the_variance_it_keeps():
    states, _, _ = states_in_a_subspace(60, 6)
    op = small_operator(subspace_dim=3)
    x = states.double().flatten(1)
    s = torch.linalg.svdvals(x - x.mean(0))
    assert op.fit_subspace(states) == pytest.approx(float(s[:3].pow(2).sum() / s.pow(2).sum()), rel=1e-9)


def test_operator_subspace_travels_in_the_state_dict():
    states, _, _ = states_in_a_subspace(20, 4)
    op = small_operator(n_params=2, subspace_dim=4)
    op.fit_subspace(states)
    for p in op.parameters():
        torch.nn.init.normal_(p, std=0.1)
    loaded = small_operator(n_params=2, subspace_dim=4)
    loaded.load_state_dict(op.state_dict())
    z, dt, params, task = operator_inputs()
    assert loaded.subspace_fitted and torch.equal(loaded(z, dt, params, task), op(z, dt, params, task))
    parent = torch.nn.ModuleDict({"operator": small_operator(n_params=2, subspace_dim=4)})
    parent.load_state_dict(
        {f"operator.{k}": v for k, v in op.state_dict().items()}
    )  # as a stage's model loads
    assert torch.equal(parent["operator"](z, dt, params, task), op(z, dt, params, task))
    unfitted = small_operator(n_params=2, subspace_dim=4)
    loaded.load_state_dict(unfitted.state_dict())  # an unfitted state turns the projection off again
    assert torch.equal(loaded.project(z), z)


def test_operator_subspace_rejects_bad_sizes_and_samples():
    with pytest.raises(ValueError, match="subspace_dim must be >= 0"):
        small_operator(subspace_dim=-1)
    whole = small_operator(subspace_dim=8 * 32)  # the whole latent: no projection, no buffers
    assert whole.subspace_dim == 0 and not any(k.startswith("subspace") for k in whole.state_dict())
    with pytest.raises(ValueError, match="subspace_dim=0"):
        small_operator().fit_subspace(torch.randn(4, 8, 32))
    with pytest.raises(
        ValueError, match=r"fit_subspace expects at least 2 latents of shape \[N, L=8, D=32\]"
    ):
        small_operator(subspace_dim=2).fit_subspace(torch.randn(4, 8, 16))


def test_models_are_deterministic_under_manual_seed():
    def build_and_run():
        torch.manual_seed(123)
        enc = GridEncoder(1, 1, tokens=4, dim=16, hidden=32)
        dec = AnyPointDecoder(16, 1, 1, hidden=32, depth=2)
        coords = grid_coords(2, 40)
        return dec(enc(torch.randn(2, 40, 1), coords), coords)

    torch.testing.assert_close(build_and_run(), build_and_run(), atol=0, rtol=0)


def test_autoencoder_fits_a_smooth_field_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    enc = GridEncoder(1, 1, tokens=8, dim=32, hidden=32, depth=1, kernel_size=5)
    dec = AnyPointDecoder(32, 1, 1, hidden=32, depth=2, fourier_features=4)
    coords = grid_coords(2, 64)
    u = torch.cat([torch.sin(2 * torch.pi * coords[:1]), torch.cos(4 * torch.pi * coords[1:]) + 0.5], dim=0)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = ((dec(enc(u, coords), coords) - u) ** 2).mean()
        loss.backward()
        if not losses:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, f"MSE went from {losses[0]:.4f} to {losses[-1]:.4f}"


def test_token_distance_bias_wraps_around_on_periodic_domains():
    bounded, periodic = token_distance_bias((8,), 2.0, False), token_distance_bias((8,), 2.0, True)
    assert torch.equal(bounded, bounded.T) and torch.equal(periodic.diagonal(), torch.zeros(8))
    assert bounded[0, 1] == periodic[0, 1] == pytest.approx(-0.5 / 4)
    assert bounded[0, 7] == pytest.approx(-0.5 * 49 / 4) and periodic[0, 7] == pytest.approx(-0.5 / 4)
    assert periodic[0, 4] == pytest.approx(-0.5 * 16 / 4)  # half way round: the farthest
    grid = token_distance_bias((2, 4), 1.0, True)  # row-major cells (i, j): token 4 i + j
    assert grid[0, 7] == pytest.approx(-0.5 * (1 + 1))  # (0, 0) and (1, 3): one cell apart on each axis
    assert grid[1, 3] == pytest.approx(-0.5 * 4)


def test_operator_locality_bias_per_task_is_saved_and_used():
    torch.manual_seed(0)
    op = small_operator(
        n_params=2, n_tasks=2, locality=1.5, task_grids=[(8,), (2, 4)], periodic=[True, False]
    )
    z, dt, params, _ = operator_inputs(batch=2)
    task = torch.tensor([0, 1])
    assert torch.equal(op(z, dt, params, task), z)  # still the identity at init
    assert torch.equal(op.state_dict()["token_bias"][0], token_distance_bias((8,), 1.5, True))
    assert torch.equal(op.state_dict()["token_bias"][1], token_distance_bias((2, 4), 1.5, False))
    for p in op.parameters():  # a trained operator: the bias now shapes its step
        p.data.normal_(0, 0.2)
    plain = small_operator(n_params=2, n_tasks=2)
    plain.load_state_dict({k: v for k, v in op.state_dict().items() if k != "token_bias"})
    assert not torch.allclose(op(z, dt, params, task), plain(z, dt, params, task))
    op.token_bias.zero_()
    torch.testing.assert_close(op(z, dt, params, task), plain(z, dt, params, task))


def test_operator_locality_rejects_bad_settings():
    with pytest.raises(ValueError, match="locality must be >= 0"):
        small_operator(locality=-1.0)
    with pytest.raises(ValueError, match="one token grid of 8 cells and one periodic flag per task"):
        small_operator(locality=2.0, task_grids=[(4,)], periodic=[True])
    with pytest.raises(ValueError, match="one token grid"):
        small_operator(locality=2.0, n_tasks=2, task_grids=[(8,)], periodic=[True])


def amplitude_pair(channels=(1,), dim: int = 16, amplitude: int = 2):
    torch.manual_seed(0)
    enc = GridEncoder(list(channels), 1, tokens=4, dim=dim, hidden=32, depth=1, amplitude=amplitude)
    dec = AnyPointDecoder(dim, 1, list(channels), hidden=32, depth=1, fourier_features=4, amplitude=amplitude)
    return enc, dec


def test_amplitude_encoder_carries_mean_and_log_scale_and_encodes_the_shape_alone():
    enc, dec = amplitude_pair()
    coords = grid_coords(2, 40)
    u = torch.randn(2, 40, 1)
    z = enc(u, coords)
    mean, scale = field_amplitude(u)
    torch.testing.assert_close(z[:, :, -2], mean.expand(2, 4))  # every token carries it
    torch.testing.assert_close(z[:, :, -1], scale.log().expand(2, 4))
    assert scale[0, 0] == pytest.approx(
        ((u[0] - u[0].mean()).pow(2).mean() + AMPLITUDE_FLOOR**2).sqrt().item()
    )
    moved = enc(100 * u - 3, coords)  # the same shape, another amplitude
    torch.testing.assert_close(moved[..., :-2], z[..., :-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        moved[:, 0, -2:], torch.cat([100 * mean - 3, (100 * scale).log()], dim=-1), atol=1e-4, rtol=1e-4
    )
    # the decoder scales the shape back: decode(encode(k u + c)) = k decode(encode(u)) + c
    torch.testing.assert_close(dec(moved, coords), 100 * dec(z, coords) - 3, atol=1e-3, rtol=1e-4)


def test_amplitude_decoder_averages_the_tokens_amplitude_and_reads_only_the_shape():
    enc, dec = amplitude_pair()
    coords = grid_coords(1, 30)
    z = enc(torch.randn(1, 30, 1), coords)
    spread = z.clone()
    spread[:, :, -1] += torch.tensor([-0.2, 0.2, -0.1, 0.1])  # the same mean over tokens
    torch.testing.assert_close(dec(spread, coords), dec(z, coords))
    shifted = z.clone()
    shifted[:, :, -1] += 1.0  # e times the scale: the same shape, e times as far from the mean
    mean = z[0, 0, -2]
    torch.testing.assert_close(dec(shifted, coords) - mean, torch.e * (dec(z, coords) - mean))


def test_amplitude_with_several_channel_counts_pads_the_narrower_fields():
    enc, dec = amplitude_pair(channels=(1, 3), amplitude=6)
    coords = grid_coords(2, 20)
    one, three = enc(torch.randn(2, 20, 1), coords), enc(torch.randn(2, 20, 3), coords)
    assert one.shape == three.shape == (2, 4, 16)
    assert torch.equal(one[..., -4:], torch.zeros(2, 4, 4)) and three[..., -6:].abs().min() > 0
    assert dec(one, coords, channels=1).shape == (2, 20, 1) and dec(three, coords, channels=3).shape == (
        2,
        20,
        3,
    )


def test_amplitude_of_a_field_that_decayed_to_nothing_is_floored():
    enc, dec = amplitude_pair()
    coords = grid_coords(1, 40)
    z = enc(torch.full((1, 40, 1), 0.5) + 1e-12 * torch.randn(1, 40, 1), coords)
    assert z[0, 0, -1].item() == pytest.approx(math.log(AMPLITUDE_FLOOR), abs=1e-6)
    assert torch.isfinite(dec(z, coords)).all()


def test_amplitude_channels_must_fit_the_fields_and_the_latent():
    with pytest.raises(ValueError, match="need.* 2 per channel"):
        GridEncoder([1, 3], 1, tokens=4, dim=16, amplitude=2)
    with pytest.raises(ValueError, match="fewer than 16"):
        GridEncoder([1], 1, tokens=4, dim=16, amplitude=16)


def test_amplitude_off_for_a_field_encodes_its_values_and_decodes_them_unscaled():
    enc, dec = amplitude_pair()
    coords = grid_coords(2, 40)
    u = torch.randn(2, 40, 1)
    z = enc(u, coords, amplitude=False)
    assert torch.equal(z[..., -2:], torch.zeros(2, 4, 2))  # mean 0, log scale 0
    assert not torch.allclose(enc(100 * u, coords, amplitude=False)[..., :-2], enc(100 * u, coords)[..., :-2])
    plain = AnyPointDecoder(
        14, 1, [1], hidden=32, depth=1, fourier_features=4
    )  # the same weights, no amplitude
    plain.load_state_dict(dec.state_dict())
    torch.testing.assert_close(dec(z, coords), plain(z[..., :-2], coords))
    off = z.clone()
    off[..., -2:] = 0.3  # a predicted latent's error in those channels: ignored with amplitude=False
    torch.testing.assert_close(dec(off, coords, amplitude=False), plain(z[..., :-2], coords))
    assert not torch.allclose(dec(off, coords), plain(z[..., :-2], coords))
