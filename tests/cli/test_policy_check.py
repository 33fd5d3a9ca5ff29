"""``npo-bot policy check``: a policy file read as the bot reads it, the policy in effect printed, and a trial
verdict for one prediction; a refused file named with its line and field, nothing on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main

PROD = """version = 1
name = "prod"
timezone = "Europe/Berlin"
[rules.deny_targets]
patterns = ["db-*"]
actions = ["drain", "reboot"]
[[rules.freeze_windows]]
name = "weekend"
days = ["sat", "sun"]
start = "00:00"
end = "23:59"
"""
DRAIN_DB = '{"id":"x","fault_type":"disk_failure","target":"DB-01","action":"drain","confidence":0.9}'


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["policy", "check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def prod(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(PROD, encoding="utf-8")
    return path


def test_the_built_in_default_is_accepted_and_shown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert (code, err) == (0, "")
    head, _, body = out.partition("\n")
    assert head.startswith("the built-in default policy: accepted")
    assert json.loads(body)["rules"]["blast_radius"]["max_concurrent"] == 2


def test_a_file_shows_every_rule_in_effect_and_a_trial_verdict(prod: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(prod), "--try", DRAIN_DB, "--at", "2026-11-25T12:00")  # a Wednesday
    assert (code, err) == (0, "")
    assert out.startswith(f"{prod}: accepted")
    assert "--try at 2026-11-25T12:00:00+00:00: block (rule deny_targets): target 'DB-01'" in out
    code, out, _ = run(capsys, str(prod), "--json", "--try", DRAIN_DB.replace("DB-01", "web-1"), "--at", "2026-11-28")
    shown = json.loads(out)
    assert code == 0 and shown["policy"]["rules"]["deny_targets"] == {
        "patterns": ["db-*"],
        "actions": ["drain", "reboot"],
    }
    assert shown["policy"]["rules"]["override_cooldown"] == {"seconds": 3600.0, "scope": "both"}  # a default shown
    assert (shown["try"]["outcome"], shown["try"]["rule"]) == ("block", "freeze_window")  # a Saturday in Berlin
    code, out, _ = run(capsys, str(prod), "--json", "--try", DRAIN_DB.replace("drain", "investigate"), "--at",
                       "2026-11-25T12:00")  # fmt: skip
    assert json.loads(out)["try"]["rule"] == "all_rules_passed"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("version = 1\n[rules.blast_radius]\nmax_concurrent = 0\n", "line 3, field rules.blast_radius.max_concurrent"),
        ("version = 1\n[rules.deny_target]\npatterns = []\n", "rules.deny_target"),
        ('version = 1\ntimezone = "Mars/Olympus"\n', "timezone"),
        ("", "empty"),
        ("# the production policy\n\n# freeze windows below\n", "empty"),  # comments only: nothing is set
    ],
)
def test_a_refused_file_is_named_with_its_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    code, out, err = run(capsys, str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"npo-bot policy check: {path}: refused:") and said in err, err
    assert err.count("\n") == 1


def test_a_missing_file_and_a_bad_trial_are_refused(prod: Path, capsys: pytest.CaptureFixture[str]) -> None:
    absent = prod.with_name("absent.toml")
    code, out, err = run(capsys, str(absent))
    assert (code, out) == (1, "")
    # The file, not the NPO_POLICY_FILE setting `serve` reads it from (not used here), and named once.
    assert err == f"npo-bot policy check: {absent}: refused: cannot read absent.toml: No such file or directory\n"
    code, out, err = run(capsys, str(prod.parent))
    assert (code, out) == (1, "") and "NPO_POLICY_FILE" not in err and "Is a directory" in err, err
    code, out, err = run(capsys, str(prod), "--try", '{"id":"x"}')
    assert (code, out) == (1, "") and "--try: fault_type: is required" in err
    code, out, err = run(capsys, str(prod), "--try", "{")
    assert (code, out) == (1, "") and "--try is not JSON" in err
    code, out, err = run(capsys, str(prod), "--at", "yesterday")
    assert (code, out) == (2, "") and "not an ISO 8601 time" in err


def test_at_without_a_trial_is_refused_not_ignored(prod: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The policy shown is the same at any time: a time alone would look as if it had been checked at that time.
    code, out, err = run(capsys, str(prod), "--at", "2026-11-28T12:00")
    assert (code, out) == (2, "")
    assert err == "npo-bot policy check: --at is the time of a --try verdict: give --try PREDICTION too\n"
    code, out, _ = run(capsys, str(prod), "--at", "2026-11-28T12:00", "--try", DRAIN_DB.replace("DB-01", "web-1"))
    assert code == 0 and "--try at 2026-11-28T12:00:00+00:00: block (rule freeze_window)" in out


def test_a_trial_with_a_key_twice_is_refused_as_the_ingest_api_refuses_it(
    prod: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # POST /api/v1/predictions answers 422 for this body; a verdict for one of the two actions would be a guess
    twice = DRAIN_DB.replace('"action":"drain"', '"action":"drain","labels":{},"action":"investigate"')
    code, out, err = run(capsys, str(prod), "--try", twice, "--at", "2026-11-25T12:00")
    assert (code, out) == (1, ""), out
    assert err.startswith("npo-bot policy check: --try: action: this key appears twice in one object"), err
