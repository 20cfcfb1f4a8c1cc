"""Latent space, condition encoders and the latent cache (the link between extracted scenes and training).

    autoencoder.py           AutoencoderKL: build the embedded one, load it or the pretrained SD VAE (Codec)
    autoencoder_training.py  `stage train-autoencoder`: train the embedded AE, latent scale, PSNR metrics
    box_tokens.py            box geometry from boxes.parquet; learned and CLIP box-token encoders
    anchor_tokens.py         learned and CLIP anchor-frame encoders
    conditions.py            both behind one interface (ConditionEncoder), chosen by the config
    cache.py                 `stage encode`: the latent cache (its format: stage.formats.latent_cache), re-encoding
                             what changed
    datasets.py              PairDataset (stage 1) and SceneStreamDataset (stages 2, 3) over the cache
"""
