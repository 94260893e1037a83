"""``training.deterministic`` on a GPU: no model uses an op torch documents as throwing under
``torch.use_deterministic_algorithms(True)`` on CUDA (but the documented allow-list), found
by recording the ATen ops of one real training step of every model (``pipeline.ml.determinism``,
the models and batches of bench/deterministic_ops.py); the mapping of torch's docstring to
ATen ops is the installed torch's and catches what it claims to (positive controls); and
every model trains a step on this CPU with the flag on."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.ml.determinism import (
    ALLOWED_ON_CUDA,
    SWITCHED,
    SWITCHED_HEADER,
    THROWING,
    THROWING_HEADER,
    aten_ops,
    documented_entries,
    record_ops,
    throwing_on_cuda,
    unmatched_entries,
)

# The models and their batches, as their studies build them: bench/deterministic_ops.py, loaded
# by path (putting bench/ on sys.path would let its scripts shadow other top-level modules).
_spec = importlib.util.spec_from_file_location("deterministic_ops",
                                               Path(__file__).resolve().parents[1] / "bench" / "deterministic_ops.py")
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
MODELS, training_step = _bench.MODELS, _bench.training_step


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread (as ``training.threads``): two contend on this two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def deterministic_algorithms():
    """torch.use_deterministic_algorithms(True) for the test, the previous setting restored after."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before, warn_only=warn_only)
    assert torch.are_deterministic_algorithms_enabled() == before


@functools.lru_cache(maxsize=None)
def recorded(name: str):
    """The recording of one training step of model ``name`` (built once per session)."""
    _, step = training_step(name)
    return record_ops(step)


# -- the docstring and the mapping -------------------------------------------------------------


@pytest.mark.parametrize("table, header", [(THROWING, THROWING_HEADER), (SWITCHED, SWITCHED_HEADER)],
                         ids=["throwing", "switched"])
def test_the_mapping_covers_exactly_the_installed_torchs_documented_list(table, header):
    stale, unmapped = unmatched_entries(table, header)
    assert not stale, f"mapped entries no longer in torch.use_deterministic_algorithms' docstring: {stale}"
    assert not unmapped, f"entries of torch {torch.__version__}'s docstring without a mapping to ATen ops: {unmapped}"
    for documented in table.values():
        missing = [op for op in documented.aten if not hasattr(torch.ops.aten, op.removeprefix("aten::"))]
        assert not missing, f"{documented.entry}: no such op in torch {torch.__version__}: {missing}"


def test_the_parse_reads_the_entries_and_notices_a_changed_list():
    entries = documented_entries()
    assert "torch.nn.AdaptiveAvgPool2d when attempting to differentiate a CUDA tensor" in entries
    assert ("torch.nn.functional.interpolate when attempting to differentiate a CUDA tensor and one of the "
            "following modes is used: linear, bilinear, bicubic, trilinear") in entries
    assert "torch.cumsum when called on a CUDA tensor when dtype is floating point or complex" in entries
    assert not set(entries) & set(documented_entries(SWITCHED_HEADER))
    doc = torch.use_deterministic_algorithms.__doc__
    changed = (doc.replace("* :func:`torch.histc` when called on a CUDA tensor",
                           "* :func:`torch.histc` when called on a CUDA tensor\n        * :func:`torch.frobnicate`"))
    changed = changed.replace(":class:`torch.nn.AvgPool3d` when attempting", ":class:`torch.nn.AvgPool3d` if")
    stale, unmapped = unmatched_entries(THROWING, THROWING_HEADER, changed)
    assert stale == ["torch.nn.AvgPool3d when attempting to differentiate a CUDA tensor"]
    assert unmapped == ["torch.nn.AvgPool3d if to differentiate a CUDA tensor", "torch.frobnicate"]
    with pytest.raises(ValueError, match="no list starting"):
        documented_entries(THROWING_HEADER, doc.replace("will throw a", "will raise a"))


def _backward(module, shape):
    def step():
        x = torch.randn(*shape, requires_grad=True)
        module(x).sum().backward()
    return step


def _flagged(step) -> set[str]:
    return {op for _, op in record_ops(step).uses(THROWING)}


def _spatial_nll():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    F.cross_entropy(logits, torch.randint(0, 3, (2, 4, 4))).backward()


def _flat_nll():
    logits = torch.randn(5, 3, requires_grad=True)
    F.cross_entropy(logits, torch.randint(0, 3, (5,))).backward()


@pytest.mark.parametrize("step, expected", [
    (_backward(torch.nn.AdaptiveAvgPool2d(3), (1, 2, 6, 6)), {"aten::_adaptive_avg_pool2d_backward"}),
    (_backward(torch.nn.AdaptiveAvgPool2d(1), (1, 2, 6, 6)), set()),  # a mean
    (_backward(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), (1, 1, 3, 3)),
     {"aten::upsample_bilinear2d_backward"}),
    (_backward(lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 3, 3)), set()),
    (lambda: F.interpolate(torch.randn(1, 1, 3, 3), scale_factor=2, mode="bicubic"), set()),  # no backward
    (_backward(lambda x: torch.cumsum(x, 0), (5,)), {"aten::cumsum"}),
    (lambda: torch.cumsum(torch.arange(5), 0), set()),
    (lambda: torch.bincount(torch.tensor([0, 2, 2]), weights=torch.ones(3)), {"aten::bincount"}),
    (lambda: torch.bincount(torch.tensor([0, 2, 2])), set()),
    (lambda: torch.randn(4, 5).median(dim=1), {"aten::median"}),
    (lambda: torch.randn(4, 5).median(), set()),
    (lambda: torch.zeros(4).put_(torch.tensor([1]), torch.ones(1)), {"aten::put_"}),
    (lambda: torch.zeros(3).scatter_reduce(0, torch.tensor([0, 0]), torch.ones(2), "prod"), {"aten::scatter_reduce"}),
    (lambda: torch.zeros(3).scatter_reduce(0, torch.tensor([0, 0]), torch.ones(2), "amax"), set()),
    (_spatial_nll, {"aten::nll_loss2d_forward"}),
    (_flat_nll, {"aten::nll_loss_forward"}),
], ids=["adaptive_avg_pool", "adaptive_avg_pool_to_1", "bilinear", "nearest", "bicubic_no_grad", "cumsum_float",
        "cumsum_long", "bincount_weights", "bincount", "median_dim", "median", "put", "scatter_prod", "scatter_amax",
        "nll_loss2d", "nll_loss"])
def test_recording_finds_the_documented_ops_on_their_documented_path_only(step, expected):
    assert _flagged(step) == expected


def test_the_allow_list_names_documented_ops_only_the_flat_nll_loss():
    for (entry, op), reason in ALLOWED_ON_CUDA.items():
        assert op in THROWING[entry].aten and reason
    assert throwing_on_cuda(record_ops(_flat_nll)) == set()
    assert throwing_on_cuda(record_ops(_spatial_nll)) == {("torch.nn.NLLLoss when called on a CUDA tensor",
                                                            "aten::nll_loss2d_forward")}


def test_aten_ops_are_the_forward_backward_and_optimiser_ops():
    conv = torch.nn.Conv2d(1, 2, 3)
    optimiser = torch.optim.Adam(conv.parameters())

    def step():
        optimiser.zero_grad()
        conv(torch.randn(1, 1, 5, 5)).square().mean().backward()
        optimiser.step()

    ops = aten_ops(step)
    assert {"aten::convolution", "aten::convolution_backward", "aten::addcdiv_"} <= ops
    assert all(op.startswith("aten::") for op in ops)


# -- the models ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_a_training_step_uses_no_op_that_throws_on_cuda_but_the_allowed(name):
    recording = recorded(name)
    assert len(recording.ops) > 20 and any(op.endswith("_backward") for op in recording.ops)
    assert not throwing_on_cuda(recording), (
        f"{name} uses ops torch.use_deterministic_algorithms(True) rejects on CUDA: {throwing_on_cuda(recording)}")


def test_every_allowed_op_is_used_by_a_model():
    used = set().union(*(recorded(name).uses(THROWING) for name in MODELS))
    assert used == set(ALLOWED_ON_CUDA), "an allow-list entry no model needs, or one the models use unlisted"


@pytest.mark.parametrize("name", list(MODELS))
def test_a_training_step_runs_on_the_cpu_under_deterministic_algorithms(name, deterministic_algorithms):
    module, step = training_step(name)
    before = [p.detach().clone() for p in module.parameters()]
    loss = step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters())), "the step changed no weight"
