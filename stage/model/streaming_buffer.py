"""HTFT memory: a StreamingBuffer per denoising step and the selector over it.

Frame T at denoising step t may look at features of earlier frames computed at the same step t
[paper]. One `StreamingBuffer` is a FIFO of the last N frames' un-fused encoder (skip) features at
one step; `StepBuffers` holds one StreamingBuffer per sampling step. Memory is N x steps x (skip
features of one frame), whatever the video length.

The selector picks K entries at negative offsets (-1 = previous frame, -5, -10 [paper]); an entry
that does not exist yet (frame index < |offset|) is zeros [dev].
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

import torch

Features = list[torch.Tensor]  # one frame's skip features: [(B, C_i, H_i, W_i) for each skip i]


class StreamingBuffer:
    """FIFO of the last `size` frames' skip features at one denoising step.

    Entries are detached (no graph into past frames, constant memory) and kept on their device, in `dtype`
    (the compute dtype of stage.model.precision; None keeps the features' own).
    """

    def __init__(self, size: int = 10, dtype: torch.dtype | None = None):
        if size < 1:
            raise ValueError(f"StreamingBuffer size must be >= 1, got {size}")
        self.size, self.dtype = size, dtype
        self._frames: deque[Features] = deque(maxlen=size)  # oldest first; maxlen evicts the oldest

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, features: Sequence[torch.Tensor]) -> None:
        """Append one frame's skip features [(B, C_i, H_i, W_i)]; evicts the oldest beyond `size`."""
        self._frames.append([f.detach().to(self.dtype) if self.dtype is not None else f.detach() for f in features])

    def get(self, offset: int) -> Features | None:
        """The frame at `offset` (-1 = most recent), or None if it does not exist yet."""
        if offset >= 0 or -offset > self.size:
            raise ValueError(f"offset must be in [-{self.size}, -1], got {offset}")
        return self._frames[offset] if -offset <= len(self._frames) else None

    def select(self, offsets: Sequence[int], like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The selector: stack the frames at `offsets` per skip.

        Args:
            offsets: K negative offsets, e.g. (-1, -5, -10).
            like: the current frame's skip features [(B, C_i, H_i, W_i)]; shapes for missing entries.
        Returns:
            [(B, K, C_i, H_i, W_i) for each skip i]; zeros where the frame does not exist yet.
        """
        picked = [self.get(o) for o in offsets]
        memory = []
        for i, ref in enumerate(like):
            entries = [p[i] if p is not None else torch.zeros_like(ref, dtype=self.dtype) for p in picked]
            memory.append(torch.stack(entries, dim=1))
        return memory

    def clear(self) -> None:
        self._frames.clear()

    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for frame in self._frames for f in frame)


class ReadOnlyBuffer:
    """A StreamingBuffer a forward pass reads but does not fill (push does nothing): stage 3 fills the
    buffer from a second pass over the model's own generated frames, as the rollout's buffers are."""

    def __init__(self, buffer: StreamingBuffer):
        self.buffer = buffer

    def __len__(self) -> int:
        return len(self.buffer)

    def select(self, offsets: Sequence[int], like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.buffer.select(offsets, like)

    def push(self, features: Sequence[torch.Tensor]) -> None:
        pass


class StepBuffers:
    """One StreamingBuffer per denoising step: `buffers[t]` is step t's buffer."""

    def __init__(self, num_steps: int, size: int = 10, dtype: torch.dtype | None = None):
        self.buffers = [StreamingBuffer(size, dtype) for _ in range(num_steps)]
        self.dtype = dtype

    def __getitem__(self, step: int) -> StreamingBuffer:
        return self.buffers[step]

    def __len__(self) -> int:
        return len(self.buffers)

    def clear(self) -> None:
        for b in self.buffers:
            b.clear()

    def nbytes(self) -> int:
        return sum(b.nbytes() for b in self.buffers)
