"""FlowNet, flow-matching pairs, ODE samplers and consistency sampling: shapes, init,
convergence orders on fields with known solutions, and a tiny end-to-end fit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ups.models.flow import (
    FlowNet,
    consistency_function,
    consistency_sample,
    flow_matching_pair,
    sample_flow,
    velocity_evaluations,
)

TOKENS, DIM, CONTEXT = 6, 8, 5


def small_flownet(**kwargs) -> FlowNet:
    return FlowNet(tokens=TOKENS, dim=DIM, context_dim=CONTEXT, hidden=32, depth=2, heads=4, **kwargs)


def flow_inputs(batch: int = 3, n_params: int = 1, dt: bool = True):
    """(x, s, context, dt, params, task_id) for small_flownet."""
    return (
        torch.randn(batch, TOKENS, DIM),
        torch.rand(batch),
        torch.randn(batch, TOKENS, CONTEXT),
        torch.full((batch,), 0.05) if dt else None,
        torch.randn(batch, n_params),
        torch.arange(batch) % 2,
    )


@pytest.mark.parametrize("n_params", [1, 3])
@pytest.mark.parametrize("with_dt", [False, True])
def test_flownet_has_latent_shape_and_is_exactly_zero_at_init(n_params, with_dt):
    torch.manual_seed(0)
    net = small_flownet(n_params=n_params, n_tasks=2)
    v = net(*flow_inputs(n_params=n_params, dt=with_dt))
    assert v.shape == (3, TOKENS, DIM)
    assert torch.equal(v, torch.zeros_like(v))


def test_flownet_output_layer_gets_a_gradient_at_init():
    torch.manual_seed(0)
    net = small_flownet(n_params=2, n_tasks=2)
    x, s, context, dt, params, task = flow_inputs(n_params=2)
    F.mse_loss(net(x, s, context, dt, params, task), torch.randn(3, TOKENS, DIM)).backward()
    assert net.proj_out.weight.grad.abs().sum() > 0
    assert net.proj_out.bias.grad.abs().sum() > 0


def test_flownet_every_parameter_gets_a_gradient_once_zero_init_layers_are_perturbed():
    torch.manual_seed(0)
    net = small_flownet(n_params=2, n_tasks=2)
    zero_init = [net.proj_out] + [block.modulation[-1] for block in net.blocks]
    with torch.no_grad():
        for layer in zero_init:
            layer.weight.normal_(std=0.1)
            layer.bias.normal_(std=0.1)
    x, s, context, dt, params, task = flow_inputs(n_params=2)
    F.mse_loss(net(x, s, context, dt, params, task), torch.randn(3, TOKENS, DIM)).backward()
    no_grad = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_flownet_output_depends_on_every_condition():
    torch.manual_seed(0)
    net = small_flownet(n_params=2, n_tasks=2)
    with torch.no_grad():
        net.proj_out.weight.normal_(std=0.1)
        for block in net.blocks:
            block.modulation[-1].weight.normal_(std=0.1)
    x, s, context, dt, params, task = flow_inputs(n_params=2)
    base = net(x, s, context, dt, params, task)
    variants = [
        net(x, s * 0.5, context, dt, params, task),
        net(x, s, context + 1, dt, params, task),
        net(x, s, context, None, params, task),
        net(x, s, context, dt, params + 1, task),
        net(x, s, context, dt, params, 1 - task),
    ]
    for v in variants:
        assert (v - base).abs().max() > 1e-4


def test_flownet_rejects_heads_not_dividing_hidden():
    with pytest.raises(ValueError, match=r"hidden=30.*heads=4"):
        FlowNet(tokens=4, dim=4, context_dim=2, hidden=30, heads=4)


def test_flownet_rejects_wrong_context_shape_naming_the_expected_shape():
    net = small_flownet(n_params=1)
    x, s, context, dt, params, task = flow_inputs(n_params=1)
    with pytest.raises(ValueError, match=r"context of shape \[3, 6, 5\], got \[3, 6, 4\]"):
        net(x, s, context[..., :4], dt, params, task)


def test_flownet_rejects_wrong_latent_and_params_shapes():
    net = small_flownet(n_params=2)
    x, s, context, dt, params, task = flow_inputs(n_params=2)
    with pytest.raises(ValueError, match=r"x of shape \[B, L=6, D=8\]"):
        net(x[:, :5], s, context, dt, params, task)
    with pytest.raises(ValueError, match=r"params of shape \[3, 2\], got \[3, 1\]"):
        net(x, s, context, dt, params[:, :1], task)


def test_flow_matching_pair_interpolates_noise_and_data_deterministically():
    x1 = torch.randn(64, 3, 2)
    x_s, s, target, x0 = flow_matching_pair(x1, torch.Generator().manual_seed(7))
    s_b = s[:, None, None]
    assert s.shape == (64,) and bool(((s >= 0) & (s <= 1)).all())
    torch.testing.assert_close(x_s, (1 - s_b) * x0 + s_b * x1)
    torch.testing.assert_close(target, x1 - x0)
    assert x0.std().item() == pytest.approx(1.0, abs=0.15)
    again = flow_matching_pair(x1, torch.Generator().manual_seed(7))
    other = flow_matching_pair(x1, torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip((x_s, s, target, x0), again))
    assert not torch.equal(x0, other[3])


def test_flow_matching_pair_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    flow_matching_pair(torch.zeros(4, 2), torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 4, 7])
def test_constant_velocity_moves_noise_by_exactly_that_constant(method, steps):
    noise, c = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    x = sample_flow(lambda x, s: c.expand_as(x), noise, steps, method)
    torch.testing.assert_close(x, noise + c, rtol=0, atol=1e-12)


def linear_field_error(steps: int, method: str, a: float = 1.0) -> float:
    """Max error of sample_flow on dx/ds = a x against the exact noise * exp(a)."""
    noise = torch.linspace(-2, 2, 8, dtype=torch.float64).reshape(4, 2)
    return (sample_flow(lambda x, s: a * x, noise, steps, method) - noise * math.exp(a)).abs().max().item()


@pytest.mark.parametrize("method, low, high", [("euler", 1.7, 2.3), ("heun", 3.3, 4.7)])
def test_linear_field_error_shrinks_at_first_order_for_euler_and_second_for_heun(method, low, high):
    errors = [linear_field_error(steps, method) for steps in (8, 16, 32)]
    assert low < errors[0] / errors[1] < high
    assert low < errors[1] / errors[2] < high


def test_heun_is_more_accurate_than_euler_at_equal_velocity_evaluations():
    assert linear_field_error(8, "heun") < 0.1 * linear_field_error(16, "euler")


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 5])
def test_velocity_evaluations_counts_the_calls_sample_flow_makes(method, steps):
    calls = []

    def velocity(x, s):
        calls.append(s.clone())
        return -x

    sample_flow(velocity, torch.randn(2, 3), steps, method)
    assert len(calls) == velocity_evaluations(steps, method) == steps * (2 if method == "heun" else 1)
    assert all(s.shape == (2,) and 0 <= s.min() and s.max() <= 1 for s in calls)


def test_sample_flow_rejects_unknown_method_and_too_few_steps():
    with pytest.raises(ValueError, match=r"'rk4'.*euler.*heun"):
        sample_flow(lambda x, s: x, torch.zeros(1, 2), 4, "rk4")
    with pytest.raises(ValueError, match=r"steps >= 1, got steps=0"):
        sample_flow(lambda x, s: x, torch.zeros(1, 2), 0, "euler")
    with pytest.raises(ValueError, match="euler"):
        velocity_evaluations(4, "midpoint")


def single_point_velocity(x1_star: torch.Tensor):
    """The rectified-flow velocity for data that is the single point x1*: (x1* - x) / (1 - s)."""

    def velocity(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (x1_star - x) / (1 - s.clamp(max=1 - 1e-6)).reshape(-1, *[1] * (x.dim() - 1))

    return velocity


@pytest.mark.parametrize("steps", [1, 4])
def test_euler_on_the_single_point_flow_lands_on_the_point(steps):
    x1_star, noise = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    x = sample_flow(single_point_velocity(x1_star), noise, steps, "euler")
    torch.testing.assert_close(x, x1_star, rtol=0, atol=1e-12)


def test_consistency_function_is_the_identity_at_the_data_end():
    x = torch.randn(4, 3, 2)
    out = consistency_function(lambda x, s: torch.randn_like(x) * 100, x, torch.ones(4))
    assert torch.equal(out, x)


def test_consistency_function_is_one_euler_step_to_the_data_end():
    x, s = torch.randn(4, 3), torch.tensor([0.0, 0.25, 0.5, 0.9])
    out = consistency_function(lambda x, s: 2 * x, x, s)
    torch.testing.assert_close(out, x + (1 - s)[:, None] * 2 * x)


@pytest.mark.parametrize("steps", [1, 2])
def test_consistency_sample_of_the_single_point_flow_returns_the_point(steps):
    x1_star, noise = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    x = consistency_sample(single_point_velocity(x1_star), noise, steps, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x1_star, rtol=0, atol=1e-5)


def test_consistency_sample_straight_path_in_one_and_two_steps_uses_the_generator():
    x1_star, noise = torch.randn(3, 4), torch.randn(3, 4)
    straight = lambda x, s: x1_star - noise  # noqa: E731 - the velocity along noise -> x1*
    one = consistency_sample(straight, noise, 1, torch.Generator().manual_seed(0))
    torch.testing.assert_close(one, x1_star)
    fresh = torch.randn(noise.shape, generator=torch.Generator().manual_seed(5))
    two = consistency_sample(straight, noise, 2, torch.Generator().manual_seed(5))
    # x_mid = 0.5 fresh + 0.5 x1*; f(x_mid, 0.5) = x_mid + 0.5 (x1* - noise)
    torch.testing.assert_close(two, x1_star + 0.5 * (fresh - noise))
    assert torch.equal(two, consistency_sample(straight, noise, 2, torch.Generator().manual_seed(5)))
    assert not torch.equal(two, consistency_sample(straight, noise, 2, torch.Generator().manual_seed(6)))


def test_consistency_sample_rejects_three_steps():
    with pytest.raises(ValueError, match="steps=1 or steps=2, got steps=3"):
        consistency_sample(lambda x, s: x, torch.zeros(1, 2), 3, torch.Generator())


def test_consistency_function_passes_gradients_to_the_velocity():
    weight = torch.tensor(2.0, requires_grad=True)
    consistency_sample(lambda x, s: weight * x, torch.ones(2, 3), 1, torch.Generator()).sum().backward()
    assert weight.grad.item() == pytest.approx(6.0)


def conditional_data(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """context c [B, 4, 4] and data x1 = 2 c + 0.05 noise [B, 4, 4]."""
    c = torch.randn(batch, 4, 4, generator=generator)
    return c, 2 * c + 0.05 * torch.randn(batch, 4, 4, generator=generator)


def sample_error(net: FlowNet, generator: torch.Generator) -> float:
    """Mean |x - 2c| of 8-step Heun samples for fresh contexts."""
    c, _ = conditional_data(256, generator)
    noise = torch.randn(c.shape, generator=generator)
    empty, task = torch.zeros(256, 0), torch.zeros(256, dtype=torch.long)
    with torch.no_grad():
        x = sample_flow(lambda x, s: net(x, s, c, None, empty, task), noise, 8, "heun")
    return (x - 2 * c).abs().mean().item()


@pytest.fixture
def one_torch_thread():
    """Run on one intra-op thread, restored afterwards: ops this small are dominated by thread
    hand-offs, and on a busy machine the default thread pool made this fit ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_flownet_learns_a_conditional_map_by_flow_matching(one_torch_thread):
    torch.manual_seed(0)
    net = FlowNet(tokens=4, dim=4, context_dim=4, hidden=32, depth=1, heads=4)
    untrained = sample_error(net, torch.Generator().manual_seed(1))
    data_gen, opt = torch.Generator().manual_seed(2), torch.optim.Adam(net.parameters(), lr=3e-3)
    empty, task = torch.zeros(64, 0), torch.zeros(64, dtype=torch.long)
    for _ in range(200):
        c, x1 = conditional_data(64, data_gen)
        x_s, s, target, _ = flow_matching_pair(x1, data_gen)
        loss = F.mse_loss(net(x_s, s, c, None, empty, task), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = sample_error(net, torch.Generator().manual_seed(1))
    assert trained < 0.2 * untrained
