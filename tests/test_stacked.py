"""A stacked network: batched layers for a chain of known layers, vmap for the rest, the same numbers either way."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from asp_tune.memory import FeatureNormTap
from asp_tune.models import build_model
from asp_tune.stacked import StackedNetwork, layer_chain, stack_parameters, take_members

K, B = 3, 16


class Wrapped(nn.Module):
    """A user's own module whose forward only calls its layers one after another."""

    def __init__(self, affine: bool = True, track: bool = True):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 20), nn.BatchNorm1d(20, affine=affine,
                                                                                    track_running_stats=track))
        self.act, self.drop, self.head = nn.GELU(), nn.Dropout(0.0), nn.Linear(20, 5)

    def forward(self, x):
        return self.head(self.drop(self.act(self.body(x))))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.b(self.a(x)) + x


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else x


class MyLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


def members(make, count: int = K) -> list[nn.Module]:
    torch.manual_seed(0)
    return [make() for _ in range(count)]


def test_only_a_chain_of_known_layers_runs_as_batched_layers():
    chain = layer_chain(build_model("mlp", (1, 8, 8), 10))
    assert [type(m).__name__ for _, m in chain] == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear",
                                                   "BatchNorm1d", "ReLU", "Linear"]
    assert [name for name, _ in layer_chain(Wrapped())] == ["body.0", "body.1", "body.2", "act", "drop", "head"]
    refused = [Residual(), Branching(), nn.Sequential(MyLinear(8, 8)), nn.Sequential(nn.Linear(8, 8),
               nn.BatchNorm1d(8, momentum=None)), build_model("resnet8", (3, 32, 32), 10)]
    assert all(layer_chain(m) is None for m in refused)
    assert StackedNetwork(Wrapped()).how == "batched layers"
    assert StackedNetwork(Wrapped(), batched_layers=False).how == "vmap"
    assert StackedNetwork(Residual()).how == "vmap"


@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False)])
def test_batched_layers_give_each_member_its_network_s_outputs_gradients_and_statistics(affine, track):
    models = members(lambda: Wrapped(affine, track))
    x = torch.randn(K, B, 3, 4)
    params, buffers = stack_parameters(models)
    net = StackedNetwork(models[0])
    out, norms = net(params, buffers, x)
    out.square().mean(dim=(1, 2)).sum().backward()
    taps, expected = [FeatureNormTap(m) for m in models], []
    for k, (m, tap) in enumerate(zip(models, taps)):
        alone = m(x[k])
        alone.square().mean().backward()
        expected.append(alone.detach())
        torch.testing.assert_close(norms[k], tap.take(B), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.detach(), torch.stack(expected), rtol=1e-5, atol=1e-6)
    for name, p in params.items():
        torch.testing.assert_close(p.grad, torch.stack([dict(m.named_parameters())[name].grad for m in models]),
                                   rtol=1e-5, atol=1e-6)
    for name, b in buffers.items():  # the running statistics and the count of batches, per member
        torch.testing.assert_close(b, torch.stack([dict(m.named_buffers())[name] for m in models]), rtol=1e-6,
                                   atol=1e-7)
    assert track == bool(buffers)
    net.train(False)  # evaluation: the same input for every member, the running statistics
    for m in models:
        m.eval()
    shared = torch.randn(B, 3, 4)
    with torch.no_grad():
        evaluated, _ = net(params, buffers, shared, shared_input=True)
        torch.testing.assert_close(evaluated, vmapped_eval(models, params, buffers, shared), rtol=1e-5, atol=1e-6)


def vmapped_eval(models, params, buffers, shared):
    net = StackedNetwork(models[0], batched_layers=False).train(False)
    return net(params, buffers, shared, shared_input=True)[0]


def test_running_statistics_match_each_member_s_batch_norm_after_steps():
    models = members(Wrapped)
    params, buffers = stack_parameters(models)
    net = StackedNetwork(models[0])
    for step in range(3):
        x = torch.randn(K, B, 12)
        with torch.no_grad():
            net(params, buffers, x)
            for k, m in enumerate(models):
                m(x[k])
    for name in ("body.2.running_mean", "body.2.running_var", "body.2.num_batches_tracked"):
        torch.testing.assert_close(buffers[name], torch.stack([dict(m.named_buffers())[name] for m in models]),
                                   rtol=1e-6, atol=1e-7)


def test_batched_layers_and_vmap_agree_on_the_mlp_a_pack_trains():
    models = members(lambda: build_model("mlp", (1, 8, 8), 10, hidden=32))
    x = torch.randn(K, B, 1, 8, 8)
    results = []
    for batched in (True, False):
        params, buffers = stack_parameters([copy.deepcopy(m) for m in models])
        out, norms = StackedNetwork(models[0], batched)(params, buffers, x)
        out.logsumexp(dim=2).sum().backward()
        results.append((out.detach(), norms, {n: p.grad for n, p in params.items()}, buffers))
    (out_a, norms_a, grads_a, buf_a), (out_b, norms_b, grads_b, buf_b) = results
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norms_a, norms_b)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6)
    for name in buf_a:
        torch.testing.assert_close(buf_a[name], buf_b[name])


def test_dropout_draws_its_own_mask_per_member_and_none_in_evaluation():
    model = nn.Sequential(nn.Linear(6, 64), nn.Dropout(0.5))
    params, buffers = stack_parameters([copy.deepcopy(model) for _ in range(K)])
    net = StackedNetwork(model)
    x = torch.ones(B, 6)
    with torch.no_grad():
        out, norms = net(params, buffers, x, shared_input=True)
        assert norms is not None  # the last Linear is the output layer: its input's norms
        zeros = out == 0
        assert not torch.equal(zeros[0], zeros[1]) and 0.3 < zeros.float().mean() < 0.7
        net.train(False)
        assert not (net(params, buffers, x, shared_input=True)[0] == 0).any()


def test_linear_weights_are_laid_out_for_the_batched_product_and_keep_it_when_members_leave():
    models = members(lambda: build_model("mlp", (1, 8, 8), 10, hidden=32))
    params, buffers = stack_parameters(models)
    weight = params["net.1.weight"]
    assert weight.shape == (K, 32, 64) and weight.mT.is_contiguous() and not weight.is_contiguous()
    assert params["net.1.bias"].is_contiguous()
    torch.testing.assert_close(weight, torch.stack([m.net[1].weight for m in models]))
    out, _ = StackedNetwork(models[0])(params, buffers, torch.randn(K, B, 1, 8, 8))
    out.sum().backward()
    assert weight.grad.stride() == weight.stride()  # the product's own layout: no copy into another
    kept = take_members(weight.detach(), torch.tensor([2, 0]))
    assert kept.stride() == weight[:2].stride()
    torch.testing.assert_close(kept, weight.detach()[[2, 0]])


class NoGradBody(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        with torch.no_grad():
            x = self.body(x)
        return self.head(x)


class EvalOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 3)

    def forward(self, x):
        x = self.a(x)
        return self.b(x if self.training else self.act(x))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


def hooked(where: str) -> nn.Module:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    target = model if where == "root" else model[0]
    if where == "pre":
        target.register_forward_pre_hook(lambda m, inputs: (inputs[0] * 2,))
    else:
        target.register_forward_hook(lambda m, inputs, out: out * 2)
    return model


@pytest.mark.parametrize("make", [NoGradBody, EvalOnly, Tied, lambda: hooked("pre"), lambda: hooked("post"),
                                  lambda: hooked("root")],
                         ids=["no_grad", "training-branch", "tied", "pre-hook", "hook", "root-hook"])
def test_what_a_traced_graph_leaves_out_keeps_a_network_off_batched_layers(make):
    """A traced graph does not record grad mode, branches on ``self.training``, hooks or tied names; such a
    network runs through vmap (and tied weights are not fused at all)."""
    assert layer_chain(make()) is None


def test_a_global_hook_keeps_every_network_off_batched_layers_while_it_is_there():
    handle = nn.modules.module.register_module_forward_hook(lambda m, inputs, out: None)
    try:
        assert layer_chain(Wrapped()) is None
    finally:
        handle.remove()
    assert layer_chain(Wrapped()) is not None


def test_the_trainer_s_own_tap_on_the_output_layer_is_no_hook_of_the_user_s():
    model = Wrapped()
    FeatureNormTap(model)
    assert layer_chain(model) is not None


def test_an_in_place_layer_on_the_shared_evaluation_input_gets_a_copy_of_it():
    model = nn.Sequential(nn.Flatten(), nn.ReLU(inplace=True), nn.Linear(12, 4))
    params, buffers = stack_parameters([copy.deepcopy(model) for _ in range(K)])
    net = StackedNetwork(model).train(False)
    shared = torch.randn(B, 3, 4)
    before = shared.clone()
    with torch.no_grad():
        out, _ = net(params, buffers, shared, shared_input=True)
    assert torch.equal(shared, before)  # the caller's batch is untouched
    torch.testing.assert_close(out, vmapped_eval([model], params, buffers, shared), rtol=1e-5, atol=1e-6)


def test_batch_norm_whose_tracking_is_turned_off_after_construction_still_evaluates_with_its_statistics():
    models = members(Wrapped)
    for m in models:
        m.body[2].running_mean.uniform_(-1, 1)
        m.body[2].track_running_stats = False
        m.eval()
    params, buffers = stack_parameters(models)
    x = torch.randn(K, B, 12)
    with torch.no_grad():
        out, _ = StackedNetwork(models[0]).train(False)(params, buffers, x)
        torch.testing.assert_close(out, torch.stack([m(x[k]) for k, m in enumerate(models)]), rtol=1e-5, atol=1e-6)


class GradBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(self.a(x)) if torch.is_grad_enabled() else self.b(x)


class FullPrecisionHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = self.a(x)
        with torch.autocast("cpu", enabled=False):
            return self.b(x)


def frozen_bias() -> nn.Module:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    bias = model[0].bias.detach().clone()
    del model[0].bias
    model[0].register_buffer("bias", bias)
    return model


def patched() -> nn.Module:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3))
    model[0].forward = lambda x: nn.functional.linear(x, model[0].weight) * 2
    return model


@pytest.mark.parametrize("make", [GradBranch, FullPrecisionHead, frozen_bias, patched],
                         ids=["grad-branch", "autocast-off", "buffer-bias", "patched-forward"])
def test_a_forward_that_depends_on_modes_or_layers_that_are_not_what_their_type_says_stay_on_vmap(make):
    assert layer_chain(make()) is None
