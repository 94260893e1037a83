"""Which ATen ops a training step runs, and which of them torch documents as nondeterministic.

With ``training.deterministic`` the Trainer runs ``torch.use_deterministic_algorithms(True)``
(Lightning's ``deterministic=True``). torch then (https://pytorch.org/docs/stable/generated/
torch.use_deterministic_algorithms.html and the docstring of the installed torch):

* throws a RuntimeError for the ops of its list "will throw a RuntimeError when mode=True"
  that have no deterministic CUDA kernel (``THROWING``), on the GPU, at training time;
* switches the ops of its list "will act deterministically when mode=True" to a
  deterministic (often slower) kernel (``SWITCHED``).

Without a GPU the inventory is made on the CPU, really, not by reading code: ``record_ops``
runs one training step (forward, loss, backward, optimiser step) under a
``torch.utils._python_dispatch.TorchDispatchMode`` and collects the name of every ATen op
that reaches the dispatcher below autograd ("aten::upsample_bilinear2d_backward"; overload
packet names, so ``aten::median`` for both ``median.default`` and ``median.dim``), backward
ops included. The documented public APIs are mapped to those names by hand
(``DocumentedOp.aten``: what each API lowers to; "when attempting to differentiate" entries
map to the backward op, where the CUDA check sits), and every mapped entry is checked
against the installed torch's docstring (``unmatched_entries``), so that a torch upgrade
that changes either list is noticed.

What the CPU inventory cannot see: where an op picks its kernel by device, the GPU runs
ops this recording never shows. ``nn.GRU`` decomposes into cell ops (mm, sigmoid, tanh) on
the CPU but runs cuDNN's ``_cudnn_rnn`` and its backward on a GPU; convolutions are recorded
as ``aten::convolution``, above the cuDNN algorithm choice (which the flag restricts to
deterministic algorithms: ``SWITCHED``); Adam on CUDA parameters takes the ``_foreach``
ops. None of these is on torch's throwing list. Ops without a device branch (``cross_entropy``,
``interpolate``, ``adaptive_avg_pool2d``) decompose alike everywhere, so what is seen here
of them is what the GPU runs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: The docstring's two lists, by the start of the sentence that opens each.
THROWING_HEADER = "The following normally-nondeterministic operations will throw a"
SWITCHED_HEADER = "The following normally-nondeterministic operations will act"


# -- the docstring ------------------------------------------------------------------------


def _plain(text: str) -> str:
    """reST markup removed (``:class:`X``` -> X, ````x```` -> x), whitespace collapsed."""
    text = re.sub(r":[a-z]+:`([^`]*)`", r"\1", text)
    return " ".join(text.replace("`", "").split())


def documented_entries(header: str = THROWING_HEADER, doc: str | None = None) -> list[str]:
    """The bullets of one list of ``torch.use_deterministic_algorithms``' docstring (``doc``,
    default the installed torch's), markup removed, one string each, in the docstring's order:
    e.g. "torch.nn.AdaptiveAvgPool2d when attempting to differentiate a CUDA tensor";
    sub-bullets (interpolate's modes) joined with commas after a colon. ValueError if the
    docstring has no such list (a torch that changed its wording: see ``unmatched_entries``)."""
    doc = torch.use_deterministic_algorithms.__doc__ if doc is None else doc
    lines = (doc or "").splitlines()
    start = next((k for k, line in enumerate(lines) if line.strip().startswith(header)), None)
    if start is None:
        raise ValueError(f"torch.use_deterministic_algorithms' docstring has no list starting {header!r}")
    entries: list[tuple[list[str], list[str]]] = []  # (the bullet's lines, its sub-bullets)
    bullet_indent = None
    for line in lines[start + 1:]:
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if bullet_indent is None:
            if stripped.startswith("* "):
                bullet_indent = indent
            elif stripped.endswith(":"):  # the rest of the header sentence
                continue
            else:
                break
        if indent < bullet_indent or (indent == bullet_indent and not stripped.startswith("* ")):
            break  # the paragraph after the list
        if indent == bullet_indent:
            entries.append(([stripped[2:]], []))
        elif stripped.startswith("- "):
            entries[-1][1].append(stripped[2:])
        else:
            entries[-1][0].append(stripped)
    result = []
    for parts, sub in entries:
        text = " ".join(parts)
        if sub:
            text = text.rstrip(":") + ": " + ", ".join(sub)
        result.append(_plain(text))
    return result


# -- the mapping -----------------------------------------------------------------------------


def argument(func, args: Sequence, kwargs: Mapping, name: str) -> Any:
    """The value of the argument ``name`` of an ATen call ``func(*args, **kwargs)``, read
    from the op's schema (its default where the call leaves it out; None if it has none)."""
    for position, spec in enumerate(func._schema.arguments):
        if spec.name == name:
            if name in kwargs:
                return kwargs[name]
            if not spec.kwarg_only and position < len(args):
                return args[position]
            return spec.default_value if spec.has_default_value() else None
    return None


Condition = Callable[[Any, Sequence, Mapping], bool]


@dataclass(frozen=True)
class DocumentedOp:
    """One bullet of the docstring and the ATen ops (overload packets) its API lowers to.

    ``entry``: the bullet as ``documented_entries`` gives it (the key of the mapping);
    ``aten``: the ops whose call, on the documented path, is what torch checks;
    ``when``: a condition on the call (func, args, kwargs) beyond the name (the docstring's
    "when accumulate=False", "with indices", "dtype is floating point"), None for every call;
    ``lowering``: how the public API gets to those ops, in words.
    """

    entry: str
    aten: tuple[str, ...]
    lowering: str
    when: Condition | None = field(default=None, compare=False)

    @property
    def api(self) -> str:
        """The public API the entry names: "torch.nn.AdaptiveAvgPool2d"."""
        return self.entry.split()[0].removesuffix("()")

    @property
    def device(self) -> str:
        """Where the entry applies, from its wording: "cuda", "cpu" or "any"."""
        cpu, cuda = "CPU" in self.entry, "CUDA" in self.entry
        return "any" if cpu == cuda else ("cuda" if cuda else "cpu")

    def applies(self, func, args: Sequence, kwargs: Mapping) -> bool:
        return self.when is None or bool(self.when(func, args, kwargs))


def _accumulate(value: bool) -> Condition:
    return lambda func, args, kwargs: bool(argument(func, args, kwargs, "accumulate")) == value


def _reduce_in(*names: str) -> Condition:
    return lambda func, args, kwargs: argument(func, args, kwargs, "reduce") in names


def _floating_or_complex(func, args, kwargs) -> bool:
    dtype = argument(func, args, kwargs, "dtype") or args[0].dtype
    return dtype.is_floating_point or dtype.is_complex


def _convolution(dims: int, transposed: bool) -> Condition:
    """aten::convolution of a (N, C, *dims) input, transposed or not; its backward by the weight's dims."""
    def check(func, args, kwargs):
        weight = argument(func, args, kwargs, "weight")
        flag = argument(func, args, kwargs, "transposed")
        return weight is not None and weight.dim() == dims + 2 and bool(flag) == transposed
    return check


def _with_max_mode(func, args, kwargs) -> bool:
    return argument(func, args, kwargs, "mode") == 2  # EmbeddingBag's MODE_MAX


_DIFFERENTIATE = "the backward op (the CUDA check is in the backward kernel)"
_INTERPOLATE_BACKWARD = ("aten::upsample_linear1d_backward", "aten::upsample_bilinear2d_backward",
                         "aten::_upsample_bilinear2d_aa_backward", "aten::upsample_bicubic2d_backward",
                         "aten::_upsample_bicubic2d_aa_backward", "aten::upsample_trilinear3d_backward")


def _documented(*ops: DocumentedOp) -> dict[str, DocumentedOp]:
    return {op.entry: op for op in ops}


#: The docstring's "will throw a RuntimeError when mode=True" list (torch 2.13), each entry
#: mapped to the ATen ops it lowers to. On a GPU with the flag these raise at training time.
THROWING: dict[str, DocumentedOp] = _documented(
    DocumentedOp("torch.nn.AvgPool3d when attempting to differentiate a CUDA tensor",
                 ("aten::avg_pool3d_backward",), _DIFFERENTIATE),
    DocumentedOp("torch.nn.AdaptiveAvgPool2d when attempting to differentiate a CUDA tensor",
                 ("aten::_adaptive_avg_pool2d_backward",),
                 "adaptive_avg_pool2d decomposes to a mean for a 1 x 1 output, else _adaptive_avg_pool2d"),
    DocumentedOp("torch.nn.AdaptiveAvgPool3d when attempting to differentiate a CUDA tensor",
                 ("aten::_adaptive_avg_pool3d_backward",), "as AdaptiveAvgPool2d"),
    DocumentedOp("torch.nn.AdaptiveMaxPool2d when attempting to differentiate a CUDA tensor",
                 ("aten::adaptive_max_pool2d_backward",), _DIFFERENTIATE),
    DocumentedOp("torch.nn.FractionalMaxPool2d when attempting to differentiate a CUDA tensor",
                 ("aten::fractional_max_pool2d_backward",), _DIFFERENTIATE),
    DocumentedOp("torch.nn.FractionalMaxPool3d when attempting to differentiate a CUDA tensor",
                 ("aten::fractional_max_pool3d_backward",), _DIFFERENTIATE),
    DocumentedOp("torch.nn.MaxUnpool1d", ("aten::max_unpool2d",),
                 "F.max_unpool1d calls max_unpool2d on an unsqueezed input"),
    DocumentedOp("torch.nn.MaxUnpool2d", ("aten::max_unpool2d",), "one op"),
    DocumentedOp("torch.nn.MaxUnpool3d", ("aten::max_unpool3d",), "one op"),
    DocumentedOp("torch.nn.functional.interpolate when attempting to differentiate a CUDA tensor and one of the "
                 "following modes is used: linear, bilinear, bicubic, trilinear", _INTERPOLATE_BACKWARD,
                 "interpolate picks upsample_<mode> (_aa with antialias=True); nearest modes are not listed"),
    DocumentedOp("torch.nn.ReflectionPad1d when attempting to differentiate a CUDA tensor",
                 ("aten::reflection_pad1d_backward",), _DIFFERENTIATE),
    DocumentedOp("torch.nn.ReflectionPad2d when attempting to differentiate a CUDA tensor",
                 ("aten::reflection_pad2d_backward",), _DIFFERENTIATE),
    DocumentedOp("torch.nn.ReflectionPad3d when attempting to differentiate a CUDA tensor",
                 ("aten::reflection_pad3d_backward",), _DIFFERENTIATE),
    DocumentedOp("torch.nn.NLLLoss when called on a CUDA tensor",
                 ("aten::nll_loss_forward", "aten::nll_loss2d_forward"),
                 "nll_loss (and cross_entropy, log_softmax then nll_loss) lowers to nll_loss_forward for (N, C) "
                 "inputs and to nll_loss2d_forward for spatial ones"),
    DocumentedOp("torch.nn.CTCLoss when attempting to differentiate a CUDA tensor",
                 ("aten::_ctc_loss_backward",), _DIFFERENTIATE),
    DocumentedOp("torch.nn.EmbeddingBag when attempting to differentiate a CUDA tensor when mode='max'",
                 ("aten::_embedding_bag_backward", "aten::_embedding_bag_dense_backward"),
                 "the backward with mode 2 (max)", _with_max_mode),
    DocumentedOp("torch.Tensor.put_ when accumulate=False", ("aten::put_", "aten::put"), "one op", _accumulate(False)),
    DocumentedOp("torch.Tensor.put_ when accumulate=True and called on a CUDA tensor", ("aten::put_", "aten::put"),
                 "one op", _accumulate(True)),
    DocumentedOp("torch.histc when called on a CUDA tensor", ("aten::histc",), "one op"),
    DocumentedOp("torch.bincount when called on a CUDA tensor and weights tensor is given", ("aten::bincount",),
                 "one op; only calls with weights",
                 lambda func, args, kwargs: argument(func, args, kwargs, "weights") is not None),
    DocumentedOp("torch.median with indices output when called on a CUDA tensor", ("aten::median",),
                 "the dim overloads (values and indices), not the full reduction",
                 lambda func, args, kwargs: func._overloadname != "default"),
    DocumentedOp("torch.nn.functional.grid_sample when attempting to differentiate a CUDA tensor",
                 ("aten::grid_sampler_2d_backward", "aten::grid_sampler_3d_backward"), _DIFFERENTIATE),
    DocumentedOp("torch.cumsum when called on a CUDA tensor when dtype is floating point or complex",
                 ("aten::cumsum", "aten::cumsum_"), "one op; only floating or complex results (an integer "
                 "cumsum, e.g. of counts, is deterministic)", _floating_or_complex),
    DocumentedOp("torch.Tensor.scatter_reduce when reduce='prod' and called on CUDA tensor",
                 ("aten::scatter_reduce", "aten::scatter_reduce_"), "one op", _reduce_in("prod")),
    DocumentedOp("torch.Tensor.resize_ when called with a quantized tensor", ("aten::resize_",), "one op",
                 lambda func, args, kwargs: args[0].is_quantized),
)

#: The docstring's "will act deterministically when mode=True" list (torch 2.13), mapped the
#: same way: these run, on the GPU through a deterministic (often slower) kernel. Entries that
#: name only the CPU (``DocumentedOp.device``) are what the flag changes in our CPU runs.
SWITCHED: dict[str, DocumentedOp] = _documented(
    *(DocumentedOp(f"torch.nn.{name} when called on CUDA tensor", ("aten::convolution", "aten::convolution_backward"),
                   "convolution (cuDNN picks a deterministic algorithm)", _convolution(dims, name.startswith("ConvT")))
      for name, dims in (("Conv1d", 1), ("Conv2d", 2), ("Conv3d", 3), ("ConvTranspose1d", 1),
                         ("ConvTranspose2d", 2), ("ConvTranspose3d", 3))),
    *(DocumentedOp(f"torch.nn.ReplicationPad{d}d when attempting to differentiate a CUDA tensor",
                   (f"aten::replication_pad{d}d_backward",), _DIFFERENTIATE) for d in (1, 2, 3)),
    DocumentedOp("torch.bmm when called on sparse-dense CUDA tensors", ("aten::bmm",), "bmm of a sparse tensor",
                 lambda func, args, kwargs: args[0].is_sparse),
    DocumentedOp("torch.Tensor.__getitem__ when attempting to differentiate a CPU tensor and the index is a list of "
                 "tensors", ("aten::index_put", "aten::index_put_", "aten::_index_put_impl_"),
                 "advanced indexing's backward is new_zeros().index_put(..., accumulate=True)", _accumulate(True)),
    DocumentedOp("torch.Tensor.index_put with accumulate=False", ("aten::index_put", "aten::index_put_",
                                                                  "aten::_index_put_impl_"),
                 "one op", _accumulate(False)),
    DocumentedOp("torch.Tensor.index_put with accumulate=True when called on a CPU tensor",
                 ("aten::index_put", "aten::index_put_", "aten::_index_put_impl_"), "one op", _accumulate(True)),
    DocumentedOp("torch.Tensor.put_ with accumulate=True when called on a CPU tensor", ("aten::put_", "aten::put"),
                 "one op", _accumulate(True)),
    DocumentedOp("torch.Tensor.scatter_add_ when called on a CUDA tensor", ("aten::scatter_add_", "aten::scatter_add"),
                 "one op; also the backward of gather"),
    DocumentedOp("torch.gather when called on a CUDA tensor that requires grad", ("aten::gather",),
                 "one op (its backward is a scatter_add)", lambda func, args, kwargs: args[0].requires_grad),
    DocumentedOp("torch.index_add when called on CUDA tensor", ("aten::index_add", "aten::index_add_"),
                 "one op; also the backward of index_select"),
    DocumentedOp("torch.index_select when attempting to differentiate a CUDA tensor", ("aten::index_add",),
                 "index_select's backward is new_zeros().index_add()"),
    DocumentedOp("torch.repeat_interleave when attempting to differentiate a CUDA tensor", ("aten::index_add",),
                 "with a tensor of repeats it gathers with index_select, whose backward is index_add; with an "
                 "integer it lowers to expand and clone, no index op"),
    DocumentedOp("torch.Tensor.index_copy when called on a CPU or CUDA tensor", ("aten::index_copy",
                                                                                 "aten::index_copy_"), "one op"),
    DocumentedOp("torch.Tensor.scatter when src type is Tensor and called on CUDA tensor", ("aten::scatter",
                                                                                            "aten::scatter_"),
                 "the overloads with a src tensor",
                 lambda func, args, kwargs: isinstance(argument(func, args, kwargs, "src"), torch.Tensor)),
    DocumentedOp("torch.Tensor.scatter_reduce when reduce='sum' or reduce='mean' and called on CUDA tensor",
                 ("aten::scatter_reduce", "aten::scatter_reduce_"), "one op", _reduce_in("sum", "mean")),
    DocumentedOp("torch.nn.MaxPool3d when attempting to differentiate a CUDA tensor",
                 ("aten::max_pool3d_with_indices_backward",), _DIFFERENTIATE),
)

#: Documented-throwing ops we keep, with the reason: (entry, aten op) -> why.
ALLOWED_ON_CUDA: dict[tuple[str, str], str] = {
    ("torch.nn.NLLLoss when called on a CUDA tensor", "aten::nll_loss_forward"): (
        "cross_entropy of (N, C) logits (the flavour tagger's loss). The docstring names NLLLoss as a whole, but "
        "torch's CUDA source alerts only in the spatial loss, nll_loss2d_forward with sum or mean "
        "(aten/src/ATen/native/cuda/LossNLL2d.cu: atomicAdd), and torch's own test of this entry "
        "(test_torch.py, test_nondeterministic_alert_NLLLoss) uses a (2, 3, 5, 5) input and expects that alert; "
        "nll_loss_forward of (N, C) inputs reduces in a single thread block (Loss.cu), without an alert. Expected "
        "to run under the flag on a GPU; not yet run on one."),
}


def unmatched_entries(table: Mapping[str, DocumentedOp], header: str, doc: str | None = None
                      ) -> tuple[list[str], list[str]]:
    """(mapped entries the docstring no longer has, docstring entries not mapped): both empty
    while ``table`` covers exactly the list of the installed torch opened by ``header``."""
    found = documented_entries(header, doc)
    return [entry for entry in table if entry not in found], [entry for entry in found if entry not in table]


# -- recording ---------------------------------------------------------------------------------


@dataclass
class Recording:
    """What one step ran: ``counts`` calls per ATen op (overload packet name, "aten::mm"),
    ``matched`` the (documented entry, op) pairs whose condition held on at least one call,
    for the entries of the tables given to ``record_ops``."""

    counts: Counter = field(default_factory=Counter)
    matched: set[tuple[str, str]] = field(default_factory=set)

    @property
    def ops(self) -> set[str]:
        """The distinct ATen ops executed (the ``aten`` namespace: not the optimiser's
        ``profiler::_record_function_*`` markers)."""
        return {name for name in self.counts if name.startswith("aten::")}

    def uses(self, table: Mapping[str, DocumentedOp]) -> set[tuple[str, str]]:
        """The (entry, op) pairs of ``table`` this step ran."""
        return {(entry, op) for entry, op in self.matched if entry in table}


class _OpRecorder(TorchDispatchMode):
    """Counts every ATen op that reaches the dispatcher (forward, backward, optimiser) and
    checks the documented entries' conditions on the calls of their ops."""

    def __init__(self, tables: Iterable[Mapping[str, DocumentedOp]]):
        super().__init__()
        self.recording = Recording()
        self.by_op: dict[str, list[DocumentedOp]] = {}
        for table in tables:
            for documented in table.values():
                for op in documented.aten:
                    self.by_op.setdefault(op, []).append(documented)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        self.recording.counts[name] += 1
        for documented in self.by_op.get(name, ()):
            if documented.applies(func, args, kwargs):
                self.recording.matched.add((documented.entry, name))
        return func(*args, **kwargs)


def record_ops(step: Callable[[], Any], tables: Iterable[Mapping[str, DocumentedOp]] = (THROWING, SWITCHED)
               ) -> Recording:
    """Run ``step()`` (one training step: forward, loss, backward, optimiser step) under a
    TorchDispatchMode and return its ``Recording``: the ATen ops it executed, with call
    counts, and the documented entries of ``tables`` it used."""
    recorder = _OpRecorder(tables)
    with recorder:
        step()
    return recorder.recording


def aten_ops(step: Callable[[], Any]) -> set[str]:
    """The names of the ATen ops (overload packets, "aten::convolution_backward") ``step()`` executed."""
    return record_ops(step, ()).ops


def throwing_on_cuda(recording: Recording, allowed: Mapping[tuple[str, str], str] = ALLOWED_ON_CUDA
                     ) -> set[tuple[str, str]]:
    """The (entry, op) pairs of ``THROWING`` a recorded step used, less those ``allowed``:
    what would raise under the flag on a GPU."""
    return {pair for pair in recording.uses(THROWING) if pair not in allowed}
