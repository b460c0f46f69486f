"""The benchmark definitions stay runnable: every method names a registered trainer (with the profile's budget
variant) and pretraining method; the tables compute the gain over the labeled-only reference."""
import json

from benchmarks.profiles import METHODS, PROFILES, methods_of, trainer_name
from benchmarks.run import aggregate
from nnunet_semi.training import TRAINERS
from pretraining.cli import PRETRAINERS


def test_every_profile_method_is_a_registered_trainer_and_pretraining():
    for profile in PROFILES.values():
        methods = methods_of(profile)
        assert methods and methods[0].key == "labeled_only"
        for method in methods:
            assert trainer_name(method, profile) in TRAINERS, (profile.name, method.key)
            assert all(pre in PRETRAINERS for pre, _ in method.pretrain), method.key
    assert set(PROFILES["hippocampus-cpu"].methods) <= set(METHODS)


def _record(method, seed, dice):
    names = ("anterior", "posterior", "mean")
    summary = {n: {"dice": {"mean": d}, "hd95": {"mean": 2.0}, "assd": {"mean": 1.0}} for n, d in zip(names, dice)}
    return {"method": method, "trainer": f"T_{method}", "seed": seed, "summary": summary,
            "timings": {"train_s": 120.0}}


def test_aggregate_reports_mean_std_and_gain(tmp_path):
    profile = PROFILES["hippocampus-cpu"]
    records = [_record("labeled_only", 0, (0.6, 0.5, 0.55)), _record("labeled_only", 1, (0.6, 0.5, 0.65)),
               _record("cps", 0, (0.7, 0.6, 0.65))]
    table = aggregate(profile, records, tmp_path)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert "60.00 ± 5.00" in rows["labeled_only"]  # mean over two seeds of 0.55 / 0.65, population std
    assert "| +5.00 |" in rows["cps"] and "| 1 |" in rows["cps"]  # 65 - 60 points, one seed
    assert (tmp_path / "dice.png").is_file() and (tmp_path / "results.md").is_file()
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert csv[0].startswith("method,trainer,seeds,dice_mean") and len(csv) == 3
    assert json.loads(json.dumps(records))  # records are plain JSON (what runs/*.json hold)
