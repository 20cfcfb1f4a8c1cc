"""One sha256 routine keys caches, rollouts and checkpoints; its recipes are the ones the stored keys were made
with (a change here would silently invalidate, or worse keep, every cache)."""

import hashlib

from stage.digest import file_digest, sha256_of


def test_digests_follow_their_recipes(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.json"
    a.write_bytes(bytes(range(256)) * 5000)  # more than one read chunk
    b.write_text('{"x": 1}')
    raw = a.read_bytes() + b.read_bytes()
    assert file_digest(a, b) == hashlib.sha256(raw).hexdigest()[:16]
    assert file_digest(b, a) != file_digest(a, b)  # the order given is part of the key
    named = hashlib.sha256(b"scale=0.5" + b"a.bin" + a.read_bytes() + b"b.json" + b.read_bytes()).hexdigest()
    assert sha256_of([a, b], named=True, prefix="scale=0.5") == named[:16]
    assert sha256_of([a], length=None) == hashlib.sha256(a.read_bytes()).hexdigest()
