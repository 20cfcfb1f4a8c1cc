"""Test support, not used by the pipeline: the one tiny config, fabricated scenes, tiny or random models and
latent caches built the pipeline's way, for the tests and the benchmarks. No product module imports it.

    config.py   TINY (the tiny config as an overlay on the schema defaults) and tiny_config(overrides)
    scenes.py   fabricated road scenes and splits, written with the product's scene writer
    models.py   tiny random CLIP models, random autoencoders and random-weights checkpoints
    cache.py    a latent cache of fabricated scenes (make_toy_cache) and a rollout's inputs (make_rollout_inputs)
"""
