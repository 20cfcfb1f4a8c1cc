"""results/report.pdf from a small fabricated results folder, evaluated by the real `stage evaluate`:
the PDF renders (poppler), has the expected pages, and its tables hold numbers."""

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import empty_scene_tables
from stage import config as config_mod
from stage.data.scene_format import write_index, write_scene
from stage.evaluate.evaluate import evaluate
from stage.report.build import build_report, make_figures

T, H, W = 64, 32, 48
VARIANTS = ("full", "no_htft", "stage1_only")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder as the pipeline lays it out; variants degrade at different rates."""
    root = tmp_path_factory.mktemp("report") / "results"
    rng = np.random.default_rng(0)
    scene = "synth-0010"
    gt = np.clip(rng.normal(120, 40, (T, H, W, 3)).cumsum(0) / np.sqrt(np.arange(1, T + 1))[:, None, None, None],
                 0, 255).astype(np.uint8)
    write_scene(root / "extracted" / "long", scene, {"fps": 12.0}, {"frames": gt, "hdmap": gt, "boxmap": gt},
                *empty_scene_tables(T))
    write_index(root / "extracted" / "long", [scene], {})
    for k, variant in enumerate(VARIANTS):
        out = root / "rollouts" / variant / scene
        out.mkdir(parents=True)
        std = (5 + 40 * k) * np.arange(T) / T
        frames = np.clip(gt + rng.normal(0, 1, gt.shape) * std[:, None, None, None], 0, 255).astype(np.uint8)
        np.save(out / "frames.npy", frames)
        (out / "meta.json").write_text(json.dumps({"variant": variant, "scene": scene, "n_frames": T,
                                                   "layout_source": ["gt"] * T, "gt_frames": T}))
    cfg = config_mod.validate({"evaluate": {"eval_size": [16, 24], "segment_length": 16, "fvd_clip_frames": 8,
                                            "fvd_clip_stride": 4, "drift_window_stride": 4}})
    evaluate(root / "rollouts", root / "extracted" / "long", root / "evaluation", cfg["evaluate"], progress=False,
             metrics_path=root / "metrics.json")
    (root / "plots").mkdir()
    steps = np.arange(1, 201)
    pd.DataFrame({"step": steps, "loss": 1.0 / np.sqrt(steps)}).to_csv(root / "plots" / "loss_stage1.csv", index=False)
    (root / "metrics").mkdir()
    (root / "metrics" / "train_stage1_metrics.json").write_text(json.dumps(
        {"stage": 1, "variant": None, "steps": 200, "first_loss_smoothed": 0.8125, "last_loss_smoothed": 0.0875,
         "train_seconds": 12.5}))
    return root, cfg


def test_report_pdf_renders_with_tables_of_numbers(results, tmp_path):
    if not shutil.which("pdftoppm"):
        pytest.skip("poppler-utils is not installed (apt-get install poppler-utils; .ci/run installs it)")
    root, cfg = results
    made = make_figures(root, cfg)
    assert set(made) == {"drift", "strips", "losses"}
    pdf = build_report(root, cfg, root / "report.pdf")
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 3  # text and tables, figures, provenance
    from PIL import Image

    with Image.open(pages[0]) as im:
        assert np.asarray(im.convert("L")).std() > 10  # something is printed on it
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    main = text.split("Main table")[1].split("Published numbers")[0]
    # variants: FID-proxy, FVD-proxy, PSNR, SSIM, motion ratio; the noise floor is unpaired (FID, FVD only)
    for row, numbers in (("full", 5), ("no htft", 5), ("stage1 only", 5), ("noise floor", 2)):
        line = next(l for l in main.splitlines() if l.strip().startswith(row))
        assert len(re.findall(r"\d+(?:\.\d+)?", line.strip()[len(row):])) == numbers, line
    assert "FID-proxy[" in text and "FID[" not in text.replace("FID-proxy[", "")
    assert "Vista" in text and "242.8" in text
    training = text.split("Training")[1].split("Main table")[0]
    assert re.search(r"stage 1 \(all variants\)\s+200\s+0\.812\s+0\.0875", training), training
    assert "Paper claim, HTFT improves" in text
    assert "git commit" in text


def test_report_names_the_missing_evaluation(tmp_path):
    from stage.errors import StageError

    with pytest.raises(StageError, match="metrics.json is missing"):
        build_report(tmp_path, config_mod.default(), tmp_path / "r.pdf")
