"""The training step as a CUDA graph (``GraphedStep``): captured once, replayed for every full
batch; ``NotCapturable`` when the step waits for the GPU somewhere (CUDA's sync debug mode tells)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn

from audioflow.training.state import PassState
from audioflow.training.step import step_loss


class NotCapturable(RuntimeError):
    """The training step waits for the GPU somewhere, so it cannot be a CUDA graph."""


def _set_sync_debug_mode(mode: int | str) -> None:
    with warnings.catch_warnings():  # "a prototype feature": it is what tells us
        warnings.simplefilter("ignore")
        torch.cuda.set_sync_debug_mode(mode)


@contextmanager
def _sync_check():
    """CUDA operations that wait for the GPU raise ``NotCapturable`` inside the block."""
    previous = torch.cuda.get_sync_debug_mode()
    _set_sync_debug_mode("error")
    try:
        yield
    except RuntimeError as exc:
        if "synchronizing CUDA operation" in str(exc):
            raise NotCapturable(str(exc)) from exc
        raise
    finally:
        _set_sync_debug_mode(previous)


class GraphedStep:
    """A training step on a GPU, captured once as a CUDA graph and replayed for each full batch.

    A small model's step is a few hundred kernels of a few microseconds each; launched one at a
    time from Python, the GPU mostly waits (on an H100 the default CNN's eager step took about
    10 ms for 1 ms of GPU work). Here the host draws the batch's random numbers exactly as the
    eager step does (``step_draws``), copies them in one transfer into fixed buffers, and one replay
    runs the augmentation, the front-end, SpecAugment, the forward and backward passes and the
    gradient clipping, into gradients that stay where the graph writes them. The fused AdamW
    step and the schedule follow eagerly. The warm-up passes before the capture leave no trace:
    batch-norm statistics and the CUDA random state are put back. They run with CUDA's
    synchronization check on: an operation that waits for the GPU cannot be captured, and
    raises ``NotCapturable`` before any capture starts.
    """

    def __init__(self, fit: PassState, cfg, device: torch.device, draws: dict, white: torch.Tensor | None):
        self.fit, self.cfg, self.device = fit, cfg, device
        self.dtypes = {k: v.dtype for k, v in draws.items()}
        self.packed = torch.empty(len(draws), len(draws["y"]), dtype=torch.float64, device=device)
        self.white = None if white is None else torch.empty_like(white)
        self._fill(draws, white)
        model = fit.model
        buffers = [t.detach().clone() for t in model.buffers()]
        rng = torch.cuda.get_rng_state(device)
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), _sync_check():
                for _ in range(3):  # cuDNN picks its kernels, the allocator fills up
                    model.zero_grad(set_to_none=True)
                    self._body()
            torch.cuda.current_stream(device).wait_stream(side)
            model.zero_grad(set_to_none=True)  # the capture allocates the gradients it writes
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self._body()
        except Exception:
            model.zero_grad(set_to_none=True)
            raise
        finally:
            with torch.no_grad():
                for t, saved in zip(model.buffers(), buffers):
                    t.copy_(saved)
            torch.cuda.set_rng_state(rng, device)

    def _fill(self, draws: dict, white: torch.Tensor | None) -> None:
        # Every per-window number is exact in float64 (indices, labels, float32 draws, flags).
        host = torch.stack([draws[k].to(torch.float64) for k in self.dtypes]).pin_memory()
        self.packed.copy_(host, non_blocking=True)
        if white is not None:
            self.white.copy_(white)

    def _body(self) -> torch.Tensor:
        draws = {k: self.packed[i].to(dtype) for i, (k, dtype) in enumerate(self.dtypes.items())}
        loss = step_loss(self.fit, draws, self.white, self.cfg, self.device, captured=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.fit.model.parameters(), self.cfg.grad_clip)
        return loss.detach()

    def __call__(self, draws: dict, white: torch.Tensor | None) -> torch.Tensor:
        """Run the step on these draws; the loss (overwritten by the next replay)."""
        self._fill(draws, white)
        self.graph.replay()
        return self.loss
