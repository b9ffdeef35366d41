"""The robosuite variant runner (eval/robosuite/ablation.py), its provenance (stats.py record) and the Wilson
interval. No simulator and no training: run.sh is replaced by tests/eval/fake_robosuite_run.sh, which writes what
training and evaluate.py would and then runs the real stats.py record."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from starvla_twinbrain import cli

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "eval" / "robosuite"))
import ablation  # noqa: E402
import stats  # noqa: E402

FAKE_RUN = Path(__file__).parent / "fake_robosuite_run.sh"


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat. Med. 17:857, Table I,
# method 3 (Wilson score, no continuity correction), to the 4 decimals printed there.
@pytest.mark.parametrize("k, n, low, high", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                             (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
                                             (29, 29, 0.8830, 1.0)])
def test_wilson_matches_newcombes_table(k, n, low, high):
    lo, hi = stats.wilson(k, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_wilson_closed_form_at_the_edges_and_symmetry():
    z2 = stats.Z95 ** 2
    # 0/n: upper bound z^2 / (n + z^2) exactly; n/n mirrors it
    assert stats.wilson(0, 50) == (0.0, pytest.approx(z2 / (50 + z2)))
    assert stats.wilson(50, 50) == (pytest.approx(50 / (50 + z2)), 1.0)
    for k in range(0, 51, 7):
        lo, hi = stats.wilson(k, 50)
        mlo, mhi = stats.wilson(50 - k, 50)
        assert lo == pytest.approx(1 - mhi) and hi == pytest.approx(1 - mlo)
        assert lo <= k / 50 <= hi


@pytest.mark.parametrize("k, n", [(0, 0), (5, 4), (-1, 3)])
def test_wilson_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError, match="0 <= successes <= episodes"):
        stats.wilson(k, n)


def test_wilson_rejects_fractional_counts():
    with pytest.raises(TypeError, match="integer successes"):
        stats.wilson(2.5, 10)


def test_overlap():
    assert stats.overlap((0.1, 0.5), (0.5, 0.9)) and not stats.overlap((0.1, 0.4), (0.5, 0.9))


def run_ablation(tmp_path, *extra, successes="state_right=30,state_head=20,state_both=26,xattn_none=12"):
    import os

    env = {**os.environ, "FAKE_PYTHON": sys.executable, "FAKE_SUCCESSES": successes}
    env.pop("OMP_NUM_THREADS", None)
    return subprocess.run([sys.executable, str(ROOT / "eval" / "robosuite" / "ablation.py"), "run",
                           "--runner", str(FAKE_RUN), "--out", str(tmp_path), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_variants_get_their_overrides_and_results_carry_the_seeds(tmp_path):
    out = run_ablation(tmp_path, "--episodes", "50", "--eval-seed", "1000", "--set", "seed=7",
                       "--json", str(tmp_path / "docs" / "summary.json"))
    assert out.returncode == 0, out.stderr
    for variant, successes in [("state_right", 30), ("state_head", 20), ("state_both", 26), ("xattn_none", 12)]:
        run = tmp_path / variant
        # the variant's overrides first, then --set's (later overrides win in OmegaConf's dotlist)
        assert (run / "argv.txt").read_text().split() == [*ablation.VARIANTS[variant][0], "seed=7"]
        r = json.loads((run / "eval" / "results.json").read_text())
        assert r["variant"] == variant and r["overrides"] == [*ablation.VARIANTS[variant][0], "seed=7"]
        assert r["training_seed"] == 7  # read back from the run's config.yaml
        assert r["evaluation_seeds"] == list(range(1000, 1050))
        assert r["successes"] == successes and r["episodes"] == 50 and r["commit"] == "fakecommit"
        assert r["wilson_95"] == [round(x, 4) for x in stats.wilson(successes, 50)]
        assert r["command"] == (f"OUT={tmp_path} VARIANT={variant} DEMOS=50 EPISODES=50 STEPS=1000 EVAL_SEED=1000 "
                                f"bash eval/robosuite/run.sh {' '.join(ablation.VARIANTS[variant][0])} seed=7")
    assert ablation.VARIANTS["xattn_none"][0] == ["framework.twinbrain.state_into=right",
                                                  "framework.twinbrain.cross_attention=none"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "docs" / "summary.json").read_text() == (tmp_path / "summary.json").read_text()
    rows = {r["variant"]: r for r in summary["variants"]}
    assert rows["state_right"]["successes"] == 30 and rows["state_right"]["evaluation_seeds"] == [1000, 1049]
    comparisons = {c["comparison"]: c for c in summary["comparisons"]}
    # 30/50 [0.46, 0.72], 20/50 [0.28, 0.54], 26/50 [0.38, 0.65] overlap pairwise; 12/50 [0.14, 0.37] does not
    assert comparisons["state path"]["intervals_overlap"] is True
    assert comparisons["cross-attention (state into the Right Brain)"] == {
        "comparison": "cross-attention (state into the Right Brain)", "variants": ["xattn_none", "state_right"],
        "intervals_overlap": False}
    table = (tmp_path / "summary.md").read_text()
    assert "| `state_right`: state_into: right (cross_attention: asymmetric) | 30/50 | 60 % | 46–72 % | 7 | " \
           "1000–1049 |" in table


def test_the_thread_count_is_part_of_the_recorded_command(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert stats.command_line("v", "runs/x", 50, 50, 500, 1000, ["a.b=1"]) == (
        "OMP_NUM_THREADS=1 OUT=runs/x VARIANT=v DEMOS=50 EPISODES=50 STEPS=500 EVAL_SEED=1000 "
        "bash eval/robosuite/run.sh a.b=1")


def test_a_subset_of_variants_and_dry_run(tmp_path):
    out = run_ablation(tmp_path, "--variants", "state_head", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "VARIANT=state_head" in out.stdout and "framework.twinbrain.state_into=head" in out.stdout
    assert not (tmp_path / "state_head").exists()  # nothing ran
    out = run_ablation(tmp_path, "--variants", "state_head")
    assert out.returncode == 0, out.stderr
    assert [r["variant"] for r in json.loads((tmp_path / "summary.json").read_text())["variants"]] == ["state_head"]


@pytest.mark.parametrize("args, message", [(["--variants", "state_rigth"], "--variants: unknown ['state_rigth']"),
                                           (["--set", "lr"], "--set: override 'lr': expected KEY=VALUE"),
                                           (["--episodes", "0"], "--episodes: expected a positive count")])
def test_bad_arguments_fail_before_anything_runs(tmp_path, args, message):
    out = run_ablation(tmp_path, *args)
    assert out.returncode != 0 and message in out.stderr
    assert not any(tmp_path.iterdir())


def test_summarize_refuses_results_without_provenance(tmp_path):
    (tmp_path / "state_right" / "eval").mkdir(parents=True)
    (tmp_path / "state_right" / "eval" / "results.json").write_text(json.dumps(
        {"episodes": 20, "successes": 15, "per_episode": []}))
    with pytest.raises(SystemExit, match="state_right: results.json has no provenance"):
        ablation.summarize(tmp_path)


def test_training_seed_unknown_is_none_not_a_guess(tmp_path):
    assert stats.training_seed(tmp_path, []) is None
    assert stats.training_seed(tmp_path, ["seed=3", "seed=5"]) == 5
    (tmp_path / "config.yaml").write_text("run_id: x\nseed: 11\ntrainer:\n  seed: 99\n")
    assert stats.training_seed(tmp_path, ["seed=5"]) == 11  # the config the run saved wins


@pytest.mark.parametrize("env, args, message", [
    ({}, ["state_into=right", "notanoverride"], "expected KEY=VALUE overrides for starvla train, got 'notanoverride'"),
    ({"VARIANT": "../elsewhere"}, [], "VARIANT: expected a plain directory name"),
])
def test_run_sh_rejects_bad_input_before_any_stage(tmp_path, env, args, message):
    import os

    out = subprocess.run(["bash", str(ROOT / "eval" / "robosuite" / "run.sh"), *args], cwd=ROOT,
                         env={**os.environ, "OUT": str(tmp_path), **env}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr and "==" not in out.stdout


@pytest.fixture
def launched(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command, **kwargs: calls.append((command, kwargs)) or 0)
    return calls


def test_starvla_eval_robosuite_passes_variant_seed_and_overrides(launched):
    assert cli.main(["eval", "robosuite", "--episodes", "50", "--variant", "state_head", "--eval-seed", "2000",
                     "--", "framework.twinbrain.state_into=head"]) == 0
    ((command, kwargs),) = launched
    assert command[2:] == ["framework.twinbrain.state_into=head"] and command[1].endswith("eval/robosuite/run.sh")
    assert {k: kwargs["env"][k] for k in ("VARIANT", "EVAL_SEED", "EPISODES")} == {
        "VARIANT": "state_head", "EVAL_SEED": "2000", "EPISODES": "50"}


def test_starvla_eval_robosuite_rejects_non_override_arguments(launched):
    with pytest.raises(SystemExit, match=r"unexpected client arguments \['--tasks'\]"):
        cli.main(["eval", "robosuite", "--", "--tasks", "a=1"])
    assert not launched
