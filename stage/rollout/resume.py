"""Where `--resume` continues a batch: the newest frame at which every unfinished stream has an intact state.

Each stream keeps its newest state checkpoints (stage/rollout/state.py KEEP). A state counts when it reads
back, fits this run's model and generator, and was made with this run's partial identity (the stream's
settings plus the batch's stream list and lanes). The batch continues from the newest frame all streams
have such a state for; an older common frame when a newer state is damaged in one stream; frame 0 when
there is none or a stream's work files do not read back. Every state or file passed over is named in one
printed line.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stage.errors import StageError
from stage.rollout.state import DISCARD, PREFIX, StreamState, load_state, states
from stage.rollout.streams import Stream, differing

RESTART = "starting over from frame 0"


def check_fits(st: StreamState, path: Path, n_frames: int, fresh_buffers, device) -> None:
    """StageError unless the state fits this run's frames, model and generator (settings are compared apart)."""
    where = path / "state.json"
    if not 1 <= st.next_frame < n_frames:
        raise StageError(f"{where}: field 'next_frame' is {st.next_frame}, outside 1..{n_frames - 1}; {DISCARD}")
    want = None if fresh_buffers is None else (len(fresh_buffers), fresh_buffers[0].size)
    have = None if st.buffers is None else (len(st.buffers), st.buffers[0].size)
    if want != have:
        raise StageError(f"{where}: field 'buffers' describes {have} (steps, size) buffers, the model needs {want}; "
                         f"{DISCARD}")
    rng_bytes = torch.Generator(device=device).get_state().numel()
    if st.rng.numel() != rng_bytes:
        raise StageError(f"{path / 'state.safetensors'}: wrong shape: rng holds {st.rng.numel()} bytes, not "
                         f"{rng_bytes}; {DISCARD}")


def intact_states(stream: Stream, identity: dict, n_frames: int, latent_shape, fresh_buffers,
                  device) -> dict[int, Path]:
    """{next frame: state folder} of the stream's usable states; {} to start over (the reason printed)."""
    candidates = states(stream.state_root)
    found: dict[int, Path] = {}
    for i, path in enumerate(candidates):
        try:
            st = load_state(path, device, latent_shape)
            check_fits(st, path, n_frames, fresh_buffers, device)
        except StageError as exc:
            older = candidates[i + 1].name if i + 1 < len(candidates) else None
            print(f"{exc}, {f'resuming from the older state {older}' if older else RESTART}")
            continue
        differ = differing(identity, st.info["settings"])
        if differ:
            if not found:
                print(f"starting over: the partial rollout in {stream.work} was made with other settings "
                      f"({', '.join(differ)} differ)")
            break
        found[st.next_frame] = path
    return found


def resume_point(streams: list[Stream], identities: dict[str, dict], n_frames: int, latent_shape, fresh_buffers,
                 device) -> dict[str, Path] | None:
    """{stream id: its state folder at the batch's common resume frame}, or None to start over."""
    found = {s.id: intact_states(s, identities[s.id], n_frames, latent_shape, fresh_buffers, device)
             for s in streams}
    if not any(found.values()):
        return None  # nothing to resume (killed before the first checkpoint), or said why above
    lacking = [s for s in streams if not found[s.id]]
    for s in lacking:
        if not states(s.state_root):
            print(f"{s.id} has no state checkpoint in {s.state_root}; {RESTART}")
    if lacking:
        return None
    common = set.intersection(*(set(f) for f in found.values()))
    if not common:
        print(f"the streams of the batch have no state checkpoint at a common frame; {RESTART}")
        return None
    start = max(common)
    for s in streams:
        if max(found[s.id]) > start:
            print(f"{s.id}: resuming from the older state {PREFIX}{start:06d}, the newest one every stream of the "
                  "batch has")
    return {s.id: found[s.id][start] for s in streams}
