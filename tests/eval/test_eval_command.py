"""`starvla eval simpler_env|robocasa`: the command it runs, whichever order the options come in (CI has neither
simulator, so the client process is replaced by a recorder)."""

import subprocess

import pytest

from starvla_twinbrain import cli

CLIENT = ["--tasks", "PutCarrotOnPlate", "--episodes", "1"]


@pytest.fixture
def launched(monkeypatch):
    """The argv and cwd `starvla eval` hands to subprocess.call."""
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command, **kwargs: calls.append((command, kwargs)) or 0)
    return calls


@pytest.mark.parametrize("benchmark, module", [("simpler_env", "eval.simpler_env.run_bridge"),
                                               ("robocasa", "eval.robocasa.run_robocasa")])
@pytest.mark.parametrize("order", ["options after the benchmark", "options before the benchmark"])
def test_eval_runs_the_client_with_the_arguments_after_the_double_dash(launched, benchmark, module, order):
    options = ["--python", "/sim/bin/python", "--port", "10111"]
    argv = ["eval", benchmark, *options] if order == "options after the benchmark" else ["eval", *options, benchmark]
    assert cli.main([*argv, "--", *CLIENT]) == 0
    ((command, kwargs),) = launched
    assert command == ["/sim/bin/python", "-m", module, "--port", "10111", *CLIENT]
    assert kwargs["cwd"] == cli.EVAL_DIR.parent


def test_eval_client_arguments_may_repeat_the_double_dash(launched):
    assert cli.main(["eval", "simpler_env", "--python", "py", "--", "--out", "--", "x"]) == 0
    assert launched[0][0][-3:] == ["--out", "--", "x"]  # only the first `--` is the separator


def test_eval_option_typo_before_the_double_dash_is_an_error(launched, capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "simpler_env", "--python", "py", "--episodes-typo", "1", "--", *CLIENT])
    assert "unrecognized arguments: --episodes-typo" in capsys.readouterr().err and not launched


def test_eval_robosuite_rejects_client_arguments(launched):
    with pytest.raises(SystemExit, match="robosuite: unexpected client arguments"):
        cli.main(["eval", "robosuite", "--", "--tasks", "Lift"])
    assert not launched


def test_eval_simulator_client_needs_python(launched):
    with pytest.raises(SystemExit, match="--python must name"):
        cli.main(["eval", "robocasa", "--", *CLIENT])


def test_double_dash_outside_eval_is_left_to_argparse(launched):
    assert cli._split_client_args(["train", "--config", "c.yaml", "--", "a=1"]) == (
        ["train", "--config", "c.yaml", "--", "a=1"], None)
    assert cli._split_client_args(["-v", "eval", "robocasa", "--", "--x"]) == (["-v", "eval", "robocasa"], ["--x"])
