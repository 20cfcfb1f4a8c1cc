"""Data: the embedded nuScenes-format world (synth) and extraction of clips with layouts (extract)."""
