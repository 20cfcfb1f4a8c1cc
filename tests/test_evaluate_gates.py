"""The gates on constructed summaries: met, missed and not measured, each on the side of its limit the rule says."""

import pytest

from stage import config as config_mod
from stage.evaluate import gates

KID = "KID-proxy"
CFG = config_mod.default()["evaluate"]["gates"]


def summary(mean):
    return {"mean": mean, "ci_low": mean, "ci_high": mean, "n_streams": 4}


def segments(*means):
    return [{"start": 40 * i, "end": 40 * (i + 1), **summary(m)} for i, m in enumerate(means)]


def variant(psnr, kind="generated", ttc=(120, 120), collapsed=(False, False), drift=(1.0, 1.2)):
    return {"kind": kind, "segments": {"PSNR": segments(*psnr)}, "time_to_collapse": list(ttc),
            "collapsed": list(collapsed), "drift_ratio": list(drift)}


ONE = {"persistence": {"PSNR": summary(26.0), KID: summary(0.0)},
       "ceiling": {"PSNR": summary(29.0), KID: summary(1e-5)},
       "sharp": {"PSNR": summary(25.5), KID: summary(2e-5)}, "blurry": {"PSNR": summary(24.9), KID: summary(3.1e-5)}}


def by_gate(entries, name):
    return {e["gate"]: e for e in entries if e["variant"] == name}


def test_the_targets_are_the_configured_ones():
    assert CFG == {"one_step_psnr_gap_db": 1.0, "one_step_kid_over_ceiling": 3.0, "drift_ratio_max": 1.5}


def test_one_step_gates_compare_with_persistence_and_the_ceiling():
    variants = {"sharp": variant([20, 19, 18]), "blurry": variant([20, 19, 18]),
                "still_photograph": variant([19, 18, 17], kind="still_photograph")}
    out = gates.assess(variants, ONE, 120, KID, CFG)
    assert [e["gate"] for e in out] == ["one_step_psnr", "one_step_kid", "beats_still_photograph", "no_collapse"] * 2
    sharp, blurry = by_gate(out, "sharp"), by_gate(out, "blurry")
    assert sharp["one_step_psnr"]["value"] == pytest.approx(0.5) and sharp["one_step_psnr"]["met"]
    assert blurry["one_step_psnr"]["value"] == pytest.approx(1.1) and blurry["one_step_psnr"]["met"] is False
    assert sharp["one_step_kid"]["value"] == pytest.approx(2.0) and sharp["one_step_kid"]["met"]
    assert blurry["one_step_kid"]["value"] == pytest.approx(3.1) and blurry["one_step_kid"]["met"] is False
    assert sharp["one_step_psnr"]["limit"] == 1.0 and sharp["one_step_kid"]["limit"] == 3.0


def test_a_tie_with_the_still_photograph_is_not_a_win():
    variants = {"v": variant([20.0, 18.0, 17.5]),
                "still_photograph": variant([19.0, 18.0, 17.0], kind="still_photograph")}
    g = by_gate(gates.assess(variants, ONE, 120, KID, CFG), "v")["beats_still_photograph"]
    assert g["value"] == 1 and g["met"] is False and g["limit"] == 0
    assert g["detail"] == "loses 1 of 3 segments (frames 40-79)"
    variants["v"] = variant([20.0, 18.1, 17.5])
    assert by_gate(gates.assess(variants, ONE, 120, KID, CFG), "v")["beats_still_photograph"]["met"] is True


@pytest.mark.parametrize("collapsed, drift, failing", [
    ((False, False), (1.0, 1.5), 0),      # at the limit passes
    ((False, False), (1.0, 1.51), 1),     # past it fails
    ((True, False), (1.0, 1.0), 1),       # a collapse fails whatever the drift
    ((False, False), (None, 1.2), 0),     # no ratio (first KID not positive): judged on collapse alone
    ((True, True), (9.0, None), 2),
])
def test_no_collapse_counts_streams_that_collapse_or_drift(collapsed, drift, failing):
    ttc = [60 if c else 120 for c in collapsed]
    variants = {"v": variant([20, 19, 18], ttc=ttc, collapsed=collapsed, drift=drift)}
    g = by_gate(gates.assess(variants, ONE, 120, KID, CFG), "v")["no_collapse"]
    assert g["value"] == failing and g["met"] is (failing == 0)


def test_what_cannot_be_measured_is_said_not_judged():
    one = {"v": {"PSNR": summary(25.0), KID: summary(2e-5)}, "ceiling": {KID: summary(-1e-6)}}
    out = by_gate(gates.assess({"v": variant([20]), "ceiling": variant([30], kind="ceiling")}, one, 40, KID, CFG), "v")
    assert set(out) == {"one_step_psnr", "one_step_kid", "beats_still_photograph", "no_collapse"}
    assert out["one_step_psnr"]["met"] is None and "persistence" in out["one_step_psnr"]["detail"]
    assert out["one_step_kid"]["met"] is None and "no ratio" in out["one_step_kid"]["detail"]
    assert out["beats_still_photograph"]["met"] is None and out["beats_still_photograph"]["value"] is None
    assert out["no_collapse"]["met"] is True  # the only gate with its inputs
