"""Published nuScenes front-camera numbers from other driving world models, for context only.

From docs/evaluation-protocol.md: two independent collations agree on these, tracing back to
Vista's comparison table. Protocols differ (8, 16 or 25 frames per clip; 150 to 5 369 clips), so they
are printed as published context, never as a like-for-like ranking with our numbers.
"""

PEERS = [
    # (model, FID, FVD, citation, protocol as collated)
    ("DriveDreamer", 52.6, 452.0, "Wang et al. 2023, arXiv 2309.09777", "as published; collated by Vista"),
    ("Drive-WM", 15.8, 122.7, "Wang et al., CVPR 2024, arXiv 2311.17918", "as published; collated by Vista"),
    ("GenAD", 15.4, 184.0, "Yang et al., CVPR 2024, arXiv 2403.09630", "as published; collated by Vista"),
    ("DriveDreamer-2", 11.2, 55.7, "Zhao et al. 2024, arXiv 2403.06845", "as published; collated by Vista"),
    ("Vista", 6.9, 89.4, "Gao et al., NeurIPS 2024, arXiv 2405.17398", "25-frame clips; its own table"),
]
STAGE_PAPER = ("STAGE (paper)", 11.0, 242.8, "Wang, Yao et al., IROS 2025, arXiv 2506.13138; numbers via survey "
               "arXiv 2510.16732 Table IV", "512x768; clip length, clip count and I3D variant not recovered")
