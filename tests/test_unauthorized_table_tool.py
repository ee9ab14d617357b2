"""tools/unauthorized_table.py --pooled: the per-draw and pooled figures the READMEs quote."""
import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("unauthorized_table",
                                               Path(__file__).parents[1] / "tools" / "unauthorized_table.py")
table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table)


def test_within_chance_is_a_corrected_binomial_test():
    assert table.within_chance(2, 60, 1 / 30, 3)        # the expected count
    assert not table.within_chance(8, 60, 1 / 30, 1)    # p ~ 0.001
    # the strongest of three: 5 / 56 passes only with the correction
    assert not table.within_chance(5, 56, 1 / 30, 1) and table.within_chance(5, 56, 1 / 30, 3)


def _run(folder: Path, right: int, clean: int, n: int, blur_hits: int, held_out: float | None = None) -> Path:
    def rec(metric, model, value, attack, role="unauthorized", count=n):
        return {"metric": metric, "evaluated_model": model, "value": value, "attack": attack, "role": role,
                "transform": "none", "n": count, "params": {}}
    recs = [rec("top1", "auth", right / n, "abuse", "authorized"), rec("clean_top1", "auth", clean / n, "abuse", "authorized"),
            rec("top1", "mean-unauthorized", 0.04, "abuse", "aggregate", 3),
            rec("readable_chance", "auth", 1 / 30, "readability", "authorized"),
            rec("readable_ssim", "image", 0.1, "readability", "image"),
            rec("readable_ssim_blur", "image", 0.09, "readability", "image"),
            rec("readable_top1", "max-unauthorized", 2 / n, "readability", "aggregate"),
            rec("readable_blur_top1", "max-unauthorized", blur_hits / n, "readability", "aggregate")]
    recs += [rec(f"{v}_clean_top1", m, 0.5, "readability") for v in ("readable", "readable_blur") for m in ("a", "b", "c")]
    if held_out is not None:
        recs.append(rec("top1", table.HELD_OUT, held_out, "abuse"))
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(recs))
    return folder


def test_pooled_row_sums_the_draws(tmp_path):
    runs = [_run(tmp_path / "s1", 57, 60, 60, 2), _run(tmp_path / "s2", 50, 59, 60, 9)]
    row = table.pooled(runs)
    assert "| 2 draws | -5.0, -15.0 (107/120, clean 119, -10.0) |" in row
    assert "0.033-0.150 (within chance on 1)" in row  # 9 of 60 out of focus is not chance
    assert "0.033-0.033 (within chance on 2)" in row
    assert table.main(["--pooled"]) == 2


def test_pooled_row_gives_the_held_out_recognizer_when_the_runs_have_it(tmp_path):
    old = table.pooled([_run(tmp_path / "old", 57, 60, 60, 2)])
    assert old.endswith("| 0.040-0.040 | - |")
    new = table.pooled([_run(tmp_path / "s1", 57, 60, 60, 2, 0.25), _run(tmp_path / "s2", 57, 60, 60, 2, 0.1)])
    assert new.endswith("| 0.040-0.040 | 0.100-0.250 |")


def test_linkage_row_scores_the_provider_and_the_linking_attacker(tmp_path):
    def run(name, auth_right, spy_right):
        def rec(metric, model, value, attack, role):
            return {"metric": metric, "evaluated_model": model, "value": value, "attack": attack, "role": role,
                    "transform": "none", "n": 60, "params": {}}
        recs = [rec("clean_top1", "auth", 58 / 60, "abuse", "authorized"),
                rec("linkage_top1", "auth", auth_right / 60, "linkage", "authorized"),
                rec("linkage_top1", "a", spy_right / 60, "linkage", "unauthorized"),
                rec("linkage_top1", "b", 1 / 60, "linkage", "unauthorized"),
                rec("linkage_chance", "auth", 1 / 30, "linkage", "aggregate")]
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(recs))
        return tmp_path / name

    row = table.linkage([run("s1", 58, 2), run("s2", 55, 12)])
    assert row == ("| 2 draws | 0.0, -5.0 (113/120, clean 116, -2.5) | a 0.033-0.200; b 0.017-0.017 "
                   "| within chance on 1 |")
    assert table.main(["--linkage", str(tmp_path / "s1")]) == 0
    old = _run(tmp_path / "old", 57, 60, 60, 2)                     # a run without the linkage attack
    assert table.main(["--linkage", str(tmp_path / "s1"), str(old)]) == 2


def test_a_folder_without_results_is_named_not_a_traceback(tmp_path, capsys):
    good = _run(tmp_path / "s1", 57, 60, 60, 2)
    assert table.main(["--pooled", str(good), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no results.json in" in err and "missing" in err and str(good) not in err
