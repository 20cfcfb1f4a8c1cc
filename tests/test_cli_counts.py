"""Counts on the command line (--threads, --frames, ...) are whole numbers >= 1: zero and negatives are refused
by argparse (exit status 2, one error line naming the flag), never replaced by a default."""

import argparse
import os

import pytest

from stage import cli

NOT_COUNTS = {"--seed", "--stage"}  # a seed may be any integer; --stage has its choices
COUNT_FLAGS = ([(name, "--threads") for name in cli.command_table()]
               + [("rollout", "--frames"), ("contact-sheet", "--frames"), ("contact-sheet", "--scenes")])


def command_actions(name: str) -> list[argparse.Action]:
    parser = cli.build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]._actions


@pytest.mark.parametrize("name,flag", COUNT_FLAGS)
@pytest.mark.parametrize("value", ["0", "-1", "-3"])
def test_a_count_below_one_is_refused_naming_the_flag(capsys, monkeypatch, name, flag, value):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == [f"stage {name}: error: argument {flag}: must be >= 1, got {value} "
                                f"(see `stage {name} --help`)"]
    assert os.environ["OMP_NUM_THREADS"] == "1"  # the early --threads pass left a bad value alone


@pytest.mark.parametrize("value", ["two", "1.5", ""])
def test_a_count_that_is_no_whole_number_is_refused(capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["config", "--threads", value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"stage config: error: argument --threads: must be a whole number >= 1, got {value!r} "
        "(see `stage config --help`)"]


def test_a_positive_count_is_taken(capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert cli.main(["config", "--threads", "1", "--section", "rollout"]) == 0
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert "frames:" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(cli.command_table()))
def test_every_integer_argument_is_a_checked_count(name):
    """A new count flag declared `type=int` would accept 0 and negatives again."""
    plain = [a.option_strings[0] for a in command_actions(name) if a.type is int and a.option_strings
             and a.option_strings[0] not in NOT_COUNTS]
    assert not plain, f"`stage {name}`: {plain} take any integer; use type=stage.cli.positive_int"
