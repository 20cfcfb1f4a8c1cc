"""On-disk formats of the pipeline's artifacts: one module per artifact states its files, fields and version,
writes it and reads it back (checked, since nothing read from disk is trusted). Every writer and reader of an
artifact goes through its module.

    scene.py          an extracted scene split (`stage extract`): index.json, per-scene arrays and tables
    latent_cache.py   the latent cache (`stage encode`): manifest.json and per-scene safetensors shards
    trained_run.py    a trained run's weights (`stage train --out`): model.safetensors + conditions.safetensors
    rollout_folder.py one rollout stream (`stage rollout`): frames, meta.json, latents, strip, mp4, timings;
                      the autoencoder reconstructions (`stage reconstruct`)
    metrics.py        the evaluation (`stage evaluate`): results/metrics.json and its CSV tables
    tensor_file.py    the safetensors writer they share: the same content, the same bytes
"""
