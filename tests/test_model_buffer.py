"""StreamingBuffer / StepBuffers semantics and how the sampler writes them."""

import torch

from stage.model import FrameConditions, StepBuffers, StreamingBuffer, build_model, new_buffers, sample_frame
from stage.testing.config import tiny_config



def frame(value: float, requires_grad: bool = False) -> list[torch.Tensor]:
    """One frame's fake skip features, every element equal to `value`."""
    return [torch.full((1, 2, 4, 4), value, requires_grad=requires_grad), torch.full((1, 3, 2, 2), value)]


def test_fifo_evicts_oldest_at_size():
    buf = StreamingBuffer(10)
    for t in range(12):
        buf.push(frame(t))
    assert len(buf) == 10
    assert buf.get(-1)[0].unique().item() == 11
    assert buf.get(-10)[0].unique().item() == 2  # frames 0 and 1 are gone


def test_selector_offsets_pick_the_right_frames():
    buf = StreamingBuffer(10)
    for t in range(15):
        buf.push(frame(t))
    memory = buf.select((-1, -5, -10), like=frame(0))
    assert [tuple(m.shape) for m in memory] == [(1, 3, 2, 4, 4), (1, 3, 3, 2, 2)]
    for m in memory:
        assert [m[:, k].unique().item() for k in range(3)] == [14, 10, 5]


def test_zeros_before_frame_n():
    buf = StreamingBuffer(10)
    assert all((m == 0).all() for m in buf.select((-1, -5, -10), like=frame(7)))
    for t in range(1, 6):  # 5 frames: -1 and -5 exist, -10 does not
        buf.push(frame(t))
    memory = buf.select((-1, -5, -10), like=frame(0))
    assert [memory[0][:, k].unique().tolist() for k in range(3)] == [[5.0], [1.0], [0.0]]


def test_stored_features_are_detached():
    buf = StreamingBuffer(3)
    x = frame(1.0, requires_grad=True)
    buf.push([f * 2 for f in x])
    stored = buf.get(-1)
    assert all(not f.requires_grad and f.grad_fn is None for f in stored)


def small_buffer_config():
    """The tiny config with a 3-frame buffer read at -1 and -3 and a 4-step sampler: the sizes counted below."""
    return tiny_config(overrides={"model": {"htft": {"buffer_size": 3, "offsets": [-1, -3]}},
                                  "diffusion": {"num_steps": 4}})


def test_sampler_writes_one_entry_per_step_per_frame_without_mixing_steps():
    torch.manual_seed(0)
    model = build_model(small_buffer_config()).eval()
    recorded = []  # (c_noise, skips) of every UNet call, in call order
    encode = model.unet.encode

    def recording_encode(sample, emb, tokens):
        deepest, skips = encode(sample, emb, tokens)
        recorded.append(skips)
        return deepest, skips

    model.unet.encode = recording_encode
    cond = FrameConditions(torch.randn(1, 4, 8, 12), torch.randn(1, 4, 8, 12), torch.randn(1, 5, 16))
    buffers = new_buffers(model)
    assert isinstance(buffers, StepBuffers) and len(buffers) == 4
    n_frames = 5
    for f in range(n_frames):
        sample_frame(model, cond, buffers, generator=torch.Generator().manual_seed(f))
        assert all(len(buffers[t]) == min(f + 1, 3) for t in range(4))
    # buffers[t] holds, oldest first, exactly the features of frames 2, 3, 4 computed at step t
    for t in range(4):
        for slot, f in enumerate(range(n_frames - 3, n_frames)):
            stored, expected = buffers[t]._frames[slot], recorded[f * 4 + t]
            assert all(torch.equal(a, b) for a, b in zip(stored, expected))
            other = recorded[f * 4 + (t + 1) % 4]
            assert not torch.equal(stored[0], other[0])
