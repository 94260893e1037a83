"""The memory layout of convolutional networks' tensors.

oneDNN, PyTorch's CPU convolution backend, runs its kernels on channels-last (NHWC)
tensors; given the default NCHW layout it reorders the activations before and after
every convolution and its gradients. With the 4-D weights stored channels-last, PyTorch
picks that layout for the convolution's output and it carries through the network (the
input need not be converted): the same function and parameters, only float rounding moves,
and the particle-flow UNet's training step runs faster (docs/benchmarks.md).
cuDNN takes either layout, so the same code runs unchanged on GPUs.
"""

from __future__ import annotations

import torch


def channels_last(module):
    """``module`` with every 4-D parameter and buffer (the 2-D convolutions' weights) stored
    channels-last, in place (the Parameter objects stay, so an optimiser built on them is
    unaffected); a module without one is unchanged. Returns the module."""
    if any(p.dim() == 4 for p in module.parameters()):
        module.to(memory_format=torch.channels_last)
    return module
