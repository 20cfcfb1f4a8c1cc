"""The report from a constructed results folder laid out as `stage evaluate` (metrics.json format_version 2,
segments.csv, streams.csv) and `stage rollout` (per-stream folders) write it: the verdict table holds the
claims' numbers, the frozen-frame statement appears exactly when the numbers say a variant loses, the
figures, tables and videos are made, and the PDF renders them."""

import base64
import copy
import json
import re
import zlib

import numpy as np
import pandas as pd
import pytest

from conftest import empty_scene_tables
from stage import config as config_mod
from stage.errors import StageError
from stage.formats import metrics
from stage.formats.scene import write_index, write_scene
from stage.report import findings, tables
from stage.report.build import CAPTIONS, build_report, make_figures

H, W, T, GT_T = 16, 24, 48, 30  # rollouts run past the 30 recorded frames
VARIANTS = ("full", "no_htft", "stages_1_2")
STREAMS = [("synth-0010", 0), ("synth-0010", 1), ("synth-0011", 0)]
SEGMENTS = [(1, 16), (16, 32), (32, 48)]
KID = "KID-proxy"
# per-segment means; PSNR higher is better, KID lower: every variant beats the still photograph here
PSNR = {"full": [30, 28, 26], "no_htft": [29, 26, 22], "stages_1_2": [28, 25, 23], "still_photograph": [20, 18, 17],
        "persistence": [33, 32, 31], "ceiling": [35, 35, 35], "real_floor": [None, None, None]}
KIDS = {"full": [0.01, 0.02, 0.03], "no_htft": [0.012, 0.03, 0.05], "stages_1_2": [0.011, 0.025, 0.04],
        "still_photograph": [0.2, 0.25, 0.3], "persistence": [0.005, 0.006, 0.007], "ceiling": [0.002] * 3,
        "real_floor": [0.001] * 3}
COLLAPSE = {"full": [48, 48, 48], "no_htft": [20, 48, 36], "stages_1_2": [48, 30, 48]}
CLAIMS = [
    {"claim": "HTFT reduces long-horizon drift", "comparison": "full vs no_htft", "a": "full", "b": "no_htft",
     "metric": KID, "frames": [16, 48], "better": "lower", "effect": -0.0123, "ci_low": -0.0201, "ci_high": -0.0042,
     "verdict": "held", "n_streams": 3},
    {"claim": "each training stage helps", "comparison": "full vs stages_1_2", "a": "full", "b": "stages_1_2",
     "metric": "PSNR", "frames": [16, 48], "better": "higher", "effect": 0.5, "ci_low": -0.4, "ci_high": 1.3,
     "verdict": "inconclusive", "n_streams": 3},
    {"claim": "600 frames without collapse", "comparison": "no_htft", "a": "no_htft", "b": None,
     "metric": "time_to_collapse", "frames": None, "better": "higher", "effect": None, "ci_low": None,
     "ci_high": None, "verdict": "contradicted", "n_streams": 3},
]

GATE_DOC = [  # full works, no_htft drifts, stages_1_2 was not scored one-step
    {"gate": "one_step_psnr", "variant": "full", "value": 0.4, "limit": 1.0, "met": True, "detail": ""},
    {"gate": "no_collapse", "variant": "full", "value": 0, "limit": 0, "met": True, "detail": ""},
    {"gate": "one_step_psnr", "variant": "no_htft", "value": 1.6, "limit": 1.0, "met": False, "detail": ""},
    {"gate": "no_collapse", "variant": "no_htft", "value": 2, "limit": 0, "met": False, "detail": ""},
    {"gate": "one_step_psnr", "variant": "stages_1_2", "value": None, "limit": 1.0, "met": None,
     "detail": "no one-step PSNR for it or for persistence"},
    {"gate": "no_collapse", "variant": "stages_1_2", "value": 1, "limit": 0, "met": False, "detail": ""},
]


def summary(mean, half=1.0, **extra):
    if mean is None:
        return {"mean": None, "ci_low": None, "ci_high": None, "n_streams": 3, **extra}
    half = half * (0.01 if mean < 1 else 1)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n_streams": 3, **extra}


def metrics_doc(psnr=PSNR, kid=KIDS, one_step_psnr=25.0):
    variants = {}
    for name in psnr:
        kind = "generated" if name in VARIANTS else name
        segs = {m: [summary(v, start=s, end=e) for v, (s, e) in zip(vals[name], SEGMENTS)]
                for m, vals in (("PSNR", psnr), (KID, kid))}
        finite = {m: [v for v in vals[name] if v is not None] for m, vals in (("PSNR", psnr), (KID, kid))}
        variants[name] = {
            "kind": kind, "streams": 3,
            "segments": segs,
            # the claim window's own summary (a bootstrap of its frames, not a mean of segment means)
            "windows": {m: [summary(round(float(np.mean(v[1:])) * 0.99, 4) if v else None, start=16, end=48)]
                        for m, v in finite.items()},
            "overall": {m: summary(float(np.mean(v)) if v else None) for m, v in finite.items()}
            | {"FID-proxy": summary(12.0), "FVD-proxy": summary(150.0)},
            **({"time_to_collapse": COLLAPSE[name], "drift_ratio": [2.0, 2.5, 3.0]} if kind == "generated" else {}),
        }
    return {
        "format_version": 2, "families": {"fid": "FID-proxy", "fvd": "FVD-proxy", "kid": KID},
        "streams": [{"scene": s, "seed": k} for s, k in STREAMS], "segments": [list(s) for s in SEGMENTS],
        "horizon": T, "variants": variants,
        "one_step": {"full": {"PSNR": summary(one_step_psnr), KID: summary(0.02), "frames": 24, "streams": 2},
                     "persistence": {"PSNR": summary(24.0), KID: summary(0.03), "frames": 24, "streams": 2}},
        "claims": copy.deepcopy(CLAIMS),
        "gates": copy.deepcopy(GATE_DOC),
        "verdict_rule": "held when the 95% interval of the effect lies on the better side of zero.",
        "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95, "unit": "streams"},
        "collapse": {"statistic": "KID-proxy of a sliding window", "window": 16, "stride": 4, "threshold": 0.5,
                     "calibration": "real vs real windows"},
    }


def write_evaluation(root, doc):
    (root / "evaluation").mkdir(parents=True, exist_ok=True)
    (root / "metrics.json").write_text(json.dumps(doc))
    rows = [{"variant": name, "segment_start": e["start"], "segment_end": e["end"], "metric": metric,
             "mean": e["mean"], "ci_low": e["ci_low"], "ci_high": e["ci_high"], "n_streams": 3,
             "name": f"{metric}[test]", "protocol_hash": "abc"}
            for name, v in doc["variants"].items() for metric, entries in v["segments"].items() for e in entries]
    pd.DataFrame(rows).to_csv(root / "evaluation" / "segments.csv", index=False)
    per_stream = [{"variant": r["variant"], "scene": s, "seed": k, "segment_start": r["segment_start"],
                   "segment_end": r["segment_end"], "metric": r["metric"], "value": r["mean"]}
                  for r in rows for s, k in STREAMS]
    pd.DataFrame(per_stream).to_csv(root / "evaluation" / "streams.csv", index=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder: metrics and CSVs as constructed above, ground truth, one folder per stream."""
    from stage.formats.rollout_folder import write_video

    root = tmp_path_factory.mktemp("report") / "results"
    rng = np.random.default_rng(0)
    for scene in dict.fromkeys(s for s, _ in STREAMS):
        gt = rng.integers(0, 255, (GT_T, H, W, 3), dtype=np.uint8)
        write_scene(root / "extracted" / "long", scene, {"fps": 12.0}, {"frames": gt, "hdmap": gt, "boxmap": gt},
                    *empty_scene_tables(GT_T))
    write_index(root / "extracted" / "long", sorted({s for s, _ in STREAMS}), {})
    for k, variant in enumerate(VARIANTS):
        for scene, seed in STREAMS:
            out = root / "rollouts" / variant / scene / f"seed-{seed}"
            out.mkdir(parents=True)
            # a flat colour per variant, so its tile in the side-by-side video can be recognised
            frames = np.full((T, H, W, 3), 60 + 60 * k, np.uint8)
            np.save(out / "frames.npy", frames)
            write_video(out / "video.mp4", frames, 12.0)
            (out / "meta.json").write_text(json.dumps({"variant": variant, "scene": scene, "seed": seed,
                                                       "n_frames": T, "gt_frames": GT_T, "condition": "generated"}))
    write_evaluation(root, metrics_doc())
    (root / "plots").mkdir()
    steps = np.arange(1, 201)
    pd.DataFrame({"step": steps, "loss": 1.0 / np.sqrt(steps)}).to_csv(root / "plots" / "loss_stage1.csv", index=False)
    (root / "metrics").mkdir()
    (root / "metrics" / "train_stage1_metrics.json").write_text(json.dumps(
        {"stage": 1, "variant": None, "steps": 200, "first_loss_smoothed": 0.8125, "last_loss_smoothed": 0.0875,
         "train_seconds": 12.5}))
    cfg = config_mod.default()
    assert cfg["dataset"]["long_split"] == "long" and cfg["rollout"]["strip_frames"][:2] == [1, 40]
    return root, cfg


def pdf_text(path) -> str:
    """The text a PDF written by reportlab shows (its page streams are ASCII85 + Flate; text is `(...) Tj`)."""
    data, shown = path.read_bytes(), []
    for m in re.finditer(rb"/ASCII85Decode /FlateDecode \][^>]*>>\s*stream\r?\n(.*?)endstream", data, re.S):
        stream = zlib.decompress(base64.a85decode(m.group(1).strip().removesuffix(b"~>")))
        shown += re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", stream, re.S)
    raw = re.sub(rb"\\([0-7]{1,3})", lambda o: bytes([int(o.group(1), 8)]), b" ".join(shown))
    return " ".join(re.sub(rb"\\(.)", rb"\1", raw).decode("cp1252", "replace").split())


def load(root):
    return metrics.load(root / "metrics.json")


def test_verdict_table_states_each_claim_with_its_numbers(results):
    rows = tables.verdict_rows(load(results[0]))
    assert rows[0] == ["HTFT reduces long-horizon drift", "full vs no_htft",
                       "KID-proxy, frames 16\u201347 (lower is better)", "-0.0123 [-0.0201, -0.0042]", "3", "held"]
    assert rows[1][3:] == ["0.5 [-0.4, 1.3]", "3", "inconclusive"]
    assert rows[2][2:] == ["time_to_collapse (higher is better)", "\u2014", "3", "contradicted"]


def test_gate_table_shows_each_variants_value_and_whether_it_met_the_target(results):
    header, rows = tables.gate_table(load(results[0]))
    assert header == ["variant", "one-step PSNR below persistence (target <= 1 dB)",
                      "streams that collapse or drift (target 0)"]
    assert rows == [["full", "0.4 dB: met", "0: met"], ["no_htft", "1.6 dB: missed", "2: missed"],
                    ["stages_1_2", "not measured: no one-step PSNR for it or for persistence", "1: missed"]]


def test_metrics_tables_hold_means_and_intervals_of_every_row(results):
    m = load(results[0])
    header, rows = tables.metrics_table(m)
    by_row = {r[0]: dict(zip(header, r)) for r in rows}
    assert list(by_row) == ["full", "no_htft", "stages_1_2", "still photograph", "persistence", "AE ceiling",
                            "real vs real"]
    assert by_row["full"]["PSNR (higher better)"] == "28 [27, 29]"
    assert by_row["real vs real"]["PSNR (higher better)"] == "\u2014"  # real vs real PSNR is infinite
    assert m.claim_windows() == [(16, 48)]
    header, rows = tables.metrics_table(m, (16, 48))  # the window's own summary, not a segment
    assert dict(zip(header, rows[0]))["PSNR (higher better)"] == "26.7 [25.7, 27.7]"
    _, collapse = tables.collapse_table(m)
    assert collapse[0][2:4] == ["0 of 3", "none"] and "no collapse = 48" in collapse[0][4]
    assert collapse[1][2:] == ["2 of 3", "20", "36"]


def _losing(case):
    psnr, kid, one_step = copy.deepcopy(PSNR), copy.deepcopy(KIDS), 25.0
    if case == "still_psnr":
        psnr["still_photograph"] = [20, 27, 27]  # full loses in the last segment, no_htft in the last two
    elif case == "still_kid":
        kid["still_photograph"] = [0.011, 0.25, 0.3]  # no_htft (0.012) is worse in the first segment only
    elif case == "one_step":
        one_step = 21.0  # below persistence's 24 with its whole interval
    elif case == "unmeasured":
        psnr["still_photograph"] = [None, None, None]  # no PSNR to compare with: no all-clear either
    return metrics_doc(psnr, kid, one_step)


@pytest.mark.parametrize("case", ["none", "still_psnr", "still_kid", "one_step", "unmeasured"])
def test_frozen_frame_statement_appears_exactly_when_a_variant_loses(tmp_path, case):
    write_evaluation(tmp_path, _losing(case))
    m = load(tmp_path)
    said = findings.statements(m)
    text = " ".join(said)
    assert findings.loses(m) == (case != "none")
    assert ("loses to the still photograph" in text) == case.startswith("still")
    assert ("loses to persistence" in text) == (case == "one_step")
    if case == "none":
        assert said == ["Every variant does at least as well as the still photograph (the first real frame, "
                        "repeated) on PSNR and KID-proxy in every segment, and at least as well as persistence "
                        "(the previous real frame, repeated) in one-step quality."]
    if case == "still_psnr":
        assert said[0].startswith("full loses to the still photograph (the first real frame, repeated) on PSNR in "
                                  "1 of 3 segments: frames 32\u201347 (0 of them")
        assert "no_htft loses to the still photograph (the first real frame, repeated) on PSNR in 2 of 3 segments: " \
               "frames 16\u201331, 32\u201347 (1 of them" in text
        assert KID not in text
    if case == "still_kid":
        assert said == ["no_htft loses to the still photograph (the first real frame, repeated) on KID-proxy in 1 "
                        "of 3 segments: frames 1\u201315 (0 of them with the variant's whole 95% interval worse than "
                        "the still photograph's mean)."]
    if case == "unmeasured":
        assert said == [f"{v}: no segment has PSNR for both it and the still photograph, so whether it beats a "
                        "frozen frame there was not measured." for v in VARIANTS]
    if case == "one_step":
        assert said == ["In one-step (teacher-forced) quality, full loses to persistence (the previous real frame, "
                        "repeated) on PSNR: 21 [20, 22] vs 24 [23, 25] (the variant's whole 95% interval is worse)."]


def test_figures_tables_and_videos_from_constructed_inputs(results):
    import imageio.v2 as imageio
    from PIL import Image

    root, cfg = results
    made = make_figures(root, cfg)
    assert set(made) == {"drift_psnr", "drift_kid", "collapse", "strips", "losses", "noise_levels", "metrics_table",
                         "metrics_html", "side_by_side"} | {f"video_{v}" for v in VARIANTS}
    for name in CAPTIONS:
        with Image.open(made[name]) as im:
            assert np.asarray(im.convert("L")).std() > 10, name  # something is drawn
    with Image.open(made["strips"]) as im:  # rows: ground truth + 3 variants, 7 columns
        assert 1.5 < im.size[0] / im.size[1] < 4
    # the per-variant videos are the first stream's own files; the side-by-side one tiles them
    first = root / "rollouts" / "full" / "synth-0010" / "seed-0" / "video.mp4"
    assert (root / "videos" / "full.mp4").read_bytes() == first.read_bytes()
    grid = np.stack(imageio.mimread(root / "videos" / "side_by_side.mp4", memtest=False))
    assert grid.shape == (T, 2 * (H + 14), 3 * W, 3)
    stages_tile = grid[:, 2 * (H + 14) - H:, :W].astype(float)  # second row, first tile: stages_1_2 (180)
    assert abs(stages_tile.mean() - 180) < 8
    gt_tile = grid[:, 14:14 + H, :W].astype(float)  # the ground truth ends after frame 30: grey tile after
    assert abs(np.median(gt_tile[GT_T + 2:]) - 90) < 6 and gt_tile[:GT_T - 1].std() > 30
    page = (root / "videos" / "side_by_side.html").read_text()
    data = re.search(r'src="data:video/mp4;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(data) == (root / "videos" / "side_by_side.mp4").read_bytes()
    csv = pd.read_csv(made["metrics_table"])
    full = csv[(csv["row"] == "full") & (csv["metric"] == "PSNR")].set_index("frames")
    assert full.loc["all", "mean"] == 28 and full.loc["16-48", "mean"] == pytest.approx(26.73)
    html = made["metrics_html"].read_text()
    assert "HTFT reduces long-horizon drift" in html and "-0.0123 [-0.0201, -0.0042]" in html
    assert "<h3>Gates</h3>" in html and "1.6 dB: missed" in html


def test_report_pdf_shows_verdicts_numbers_and_the_frozen_frame_warning(results, tmp_path):
    root, cfg = results
    make_figures(root, cfg)
    text = pdf_text(build_report(root, cfg, tmp_path / "report.pdf"))
    for s in ("Read this first", "Claims and verdicts", "HTFT reduces long-horizon drift", "held", "inconclusive",
              "contradicted", "-0.0123 [-0.0201, -0.0042]", "28 [27, 29]", "Frames 16\u201347",
              "Every variant does at least as well as the still photograph", "bootstrap, resampling streams",
              "Verdict rule: held when", "stage 1 (all variants) 200 0.812 0.0875", "Vista", "git commit",
              "Gates: does each variant work at all?", "2 of 5 measured gates met", "1.6 dB: missed"):
        assert s in text, s
    assert "loses to" not in text
    losing = tmp_path / "losing"
    write_evaluation(losing, _losing("still_psnr"))  # metrics only: the PDF still renders, without figures
    text = pdf_text(build_report(losing, cfg, losing / "report.pdf"))
    assert "no_htft loses to the still photograph (the first real frame, repeated) on PSNR in 2 of 3 segments" in text
    assert "Every variant does at least as well" not in text


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.update(format_version=1), r"format_version 1, but the report reads format_version 2"),
    (lambda d: d["claims"][1].pop("verdict"), r"\(claims\[1\]\): field 'verdict' is missing"),
    (lambda d: d["gates"][0].update(gate="sharpness"), r"\(gates\[0\]\): gate 'sharpness' is not one of"),
    (lambda d: d["gates"][1].update(met="yes"), r"\(gates\[1\]\).met is 'yes', not true, false or null"),
    (lambda d: d["variants"]["full"]["segments"]["PSNR"][0].update(mean="high"),
     r"variants.full\).segments.PSNR\[0\].mean is 'high', not a number"),
    (lambda d: d["streams"].__setitem__(0, {"scene": "../x", "seed": 0}), r"scene '../x' cannot name a folder"),
])
def test_damaged_metrics_are_refused_in_one_line_naming_the_field(results, tmp_path, damage, message):
    root, cfg = results
    doc = metrics_doc()
    damage(doc)
    (tmp_path / "metrics.json").write_text(json.dumps(doc))
    for name in ("evaluation", "rollouts", "extracted"):
        (tmp_path / name).symlink_to(root / name)
    with pytest.raises(StageError, match=message):
        make_figures(tmp_path, cfg)


def test_report_names_the_missing_evaluation(tmp_path):
    with pytest.raises(StageError, match="metrics.json is missing"):
        build_report(tmp_path, config_mod.default(), tmp_path / "r.pdf")


def test_report_rules_flag_every_figure_table_and_video_with_a_caption():
    from conftest import REPO

    rules = (REPO / "workflow/rules/report.smk").read_text()
    captions = re.findall(r'caption=f?"([^"]+)"', rules)
    assert len(captions) >= 6
    for caption in captions:
        for name in CAPTIONS if "{name}" in caption else [None]:
            path = REPO / "workflow/rules" / caption.replace("{name}", name or "")
            assert path.is_file() and path.read_text().strip(), path
    figures = re.search(r"REPORT_FIGURES = \[([^\]]+)\]", rules).group(1)
    assert re.findall(r'"(\w+)"', figures) == list(CAPTIONS)  # the rule's outputs are what make_figures draws
    for flagged in ("metrics_table.html", "videos/side_by_side.html", "videos/{v}.mp4", "report.pdf"):
        assert re.search(r"report\(\s*f\"\{R\}/[^\"]*" + re.escape(flagged), rules), flagged
