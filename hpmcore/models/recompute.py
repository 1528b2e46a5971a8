"""Activation checkpointing that leaves BatchNorm running statistics as a plain forward would.

:func:`checkpoint_module` runs ``module(x)`` through :func:`torch.utils.checkpoint.checkpoint`
(non-reentrant): the module's activations are not kept for the backward pass but recomputed in it, which
trades compute for memory. A BatchNorm in training mode would update its running mean/var (and
``num_batches_tracked``) a second time during that recomputation; here the recomputation runs in a
context that restores those buffers afterwards, so the weights, gradients and buffers after a step are
the ones the step gives without checkpointing (bit-identical on the CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_module", "keep_batchnorm_buffers"]


@contextmanager
def keep_batchnorm_buffers(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics of ``module``'s training-mode BatchNorms on exit."""
    saved = [
        (buf, buf.clone())
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buf is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _contexts(module: nn.Module) -> tuple[Any, Any]:
    return nullcontext(), keep_batchnorm_buffers(module)


def checkpoint_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, its activations recomputed in the backward pass instead of stored (see the module
    docstring). Use it only where gradients are being recorded."""
    return checkpoint(module, x, use_reentrant=False, context_fn=partial(_contexts, module))
