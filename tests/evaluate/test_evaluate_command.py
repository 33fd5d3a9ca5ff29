"""`npo-bot evaluate` end to end on small folders, the JSON other tools rely on, and the real data when present."""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.evaluate.cli import add_evaluate_parser, run_evaluate
from bot.evaluate.formats import FORMATS, read_dataset
from bot.evaluate.nab import read_nab
from bot.evaluate.runner import EvaluationSettings, evaluate
from npo.evaluate.data import Dataset

from .conftest import real_data, write_nab


def main(argv: Sequence[str]) -> int:
    """``npo-bot`` with just the ``evaluate`` sub-command, parsed as ``bot/cli.py`` registers it."""
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    return run_evaluate(parser.parse_args(argv))


M_KEYS = ("precision", "recall", "f1", "override_rate", "surfaced", "l_align_first_quarter", "l_align_last_quarter")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["evaluate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_a_format_added_to_formats_is_named_by_its_registered_name(
    nab_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter added as the README's Development section says (a reader returning a Dataset, registered in
    FORMATS) is named in the JSON and the table by the name it is registered under, without repeating it in
    ``Dataset.notes``."""

    def read_mine(folder: Path, *, horizon_s: float) -> Dataset:
        nab = read_nab(folder, horizon_s=horizon_s)
        return Dataset(name=nab.name, series=nab.series, windows=nab.windows, horizon_s=horizon_s)

    monkeypatch.setitem(FORMATS, "mine", (read_mine, 3600.0))
    out = _run(capsys, "--data", str(nab_dir), "--format", "mine", "--seeds", "1", "--quiet")
    assert out["data"]["format"] == "mine"  # type: ignore[index]
    assert main(["evaluate", "--data", str(nab_dir), "--format", "mine", "--seeds", "1", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"{nab_dir.name} (mine): ")


def test_json_has_the_documented_shape(nab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--data", str(nab_dir), "--format", "nab", "--seeds", "2", "--seed", "7")
    assert out["seeds"] == [7, 8]
    fixed, ablation = out["fixed"], out["fixed_loop"]
    assert isinstance(fixed, dict) and sorted(fixed) == ["0.5", "0.6", "0.7", "0.8", "0.9"]
    assert isinstance(ablation, dict) and sorted(ablation) == sorted(fixed)
    for m in (out["npo"], out["surface_all"], *fixed.values(), *ablation.values()):
        assert isinstance(m, dict)
        for key in M_KEYS:
            assert key in m
        assert len(m["tau_quarters"]) == 4 and "ci95" in m and "per_seed" in m


def test_surface_all_surfaces_every_prediction_and_catches_the_spike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_nab(tmp_path / "nab")
    out = _run(capsys, "--data", str(folder), "--seeds", "1", "--noise", "0", "--skip-rate", "0")
    data, everything = out["data"], out["surface_all"]
    assert isinstance(data, dict) and isinstance(everything, dict)
    assert everything["surfaced"] == data["predictions"] > 0
    assert everything["precision"] == pytest.approx(data["predictions_inside_windows"] / data["predictions"])
    assert everything["recall"] == pytest.approx(data["windows_flagged_by_predictor"] / data["windows"])
    assert everything["recall"] == 1.0  # the labelled spike is flagged
    # With truthful engineers the observed override rate is exactly 1 − precision.
    assert everything["override_rate"] == pytest.approx(1 - everything["precision"])
    # "fixed" is the static rule: every emitted prediction has p ≥ 0.75, so τ ≤ 0.7 surfaces all of them, and the
    # static rule learns nothing, so the engineers' answers cannot change what it surfaces.
    fixed = out["fixed"]
    assert isinstance(fixed, dict)
    assert all(fixed[t]["surfaced"] == everything["surfaced"] for t in ("0.5", "0.6", "0.7"))
    assert all(not math.isnan(m["precision"]) for m in fixed.values() if m["surfaced"])


def test_sqlite_store_gives_the_same_figures_as_memory(
    smd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    memory = _run(capsys, "--data", str(smd_dir), "--seeds", "1")
    on_disk = _run(capsys, "--data", str(smd_dir), "--seeds", "1", "--db", str(tmp_path / "dbs"))
    assert on_disk["settings"]["store"] == "sqlite"  # type: ignore[index]
    assert (tmp_path / "dbs" / "evaluate-npo-seed0.db").is_file()
    for name in ("npo", "surface_all"):
        for key in M_KEYS:
            assert on_disk[name][key] == memory[name][key], (name, key)  # type: ignore[index]


def test_table_and_errors(nab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| **NPO** |" in printed and "| fixed τ = 0.9 |" in printed and "| surface everything |" in printed
    assert "| ablation: loop with τ = 0.5 |" in printed
    (surface_all,) = [line for line in printed.splitlines() if line.startswith("| surface everything |")]
    assert surface_all.endswith("| — |")  # it has no threshold
    with pytest.raises(SystemExit):  # a --data that names nothing is refused with the usage
        main(["evaluate", "--data", str(tmp_path / "absent")])
    assert "argument --data: no such folder" in capsys.readouterr().err
    (nab_dir / "windows.json").unlink()
    assert main(["evaluate", "--data", str(nab_dir), "--format", "nab"]) == 1  # the data are refused
    assert "windows.json: missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--noise", "1.5"])


def test_the_table_keeps_a_quarter_without_a_draw_in_its_place(
    nab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """τ by quarter: a quarter where NPO drew no τ (JSON null) is shown as "–" in its place, not left out (which
    made three quarters read as four, shifted)."""
    from bot.evaluate.table import table  # noqa: PLC0415

    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    result["npo"]["tau_quarters"] = [0.6, None, 0.5, 0.55]
    result["fixed"]["0.7"]["tau_quarters"] = [None, None, None, None]
    lines = table(result).splitlines()
    (npo,) = [line for line in lines if line.startswith("| **NPO** |")]
    assert npo.endswith("| 0.60 → – → 0.50 → 0.55 |"), npo
    (fixed,) = [line for line in lines if line.startswith("| fixed τ = 0.7 |")]
    assert fixed.endswith("| — |"), fixed


@pytest.mark.parametrize("fmt", ["nab", "smd"])
def test_real_data_runs_and_counts_consistently(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder = real_data(fmt)
    out = _run(capsys, "--data", str(folder), "--format", fmt, "--seeds", "2")
    data, npo, everything = out["data"], out["npo"], out["surface_all"]
    assert isinstance(data, dict) and isinstance(npo, dict) and isinstance(everything, dict)
    assert data["windows"] == {"nab": 23, "smd": 50}[fmt]
    assert everything["surfaced"] == data["predictions"]
    assert 0 < npo["surfaced"] <= everything["surfaced"]
    if fmt == "nab":  # NPO learns to hold back the kinds engineers override; on SMD no kind is worth holding back
        assert npo["surfaced"] < everything["surfaced"]
    assert 0.0 <= npo["precision"] <= 1.0 and 0.0 <= npo["recall"] <= everything["recall"]
    assert out["settings"]["prior_events"] == 2.0 and out["settings"]["name_dimension"] is True  # type: ignore[index]


def test_full_information_is_the_default_and_can_be_switched_off(capsys: pytest.CaptureFixture[str]) -> None:
    folder = real_data("nab")
    default = _run(capsys, "--data", str(folder), "--format", "nab", "--seeds", "1")
    drawn = _run(capsys, "--data", str(folder), "--format", "nab", "--seeds", "1", "--no-full-information")
    assert default["settings"]["full_information"] is True  # type: ignore[index]
    assert drawn["settings"]["full_information"] is False  # type: ignore[index]
    assert default["npo"]["tau_quarters"] != drawn["npo"]["tau_quarters"]  # type: ignore[index]
    assert default["fixed_loop"] == drawn["fixed_loop"]  # a single arm learns the same either way


def test_ablation_switches_reach_the_settings(capsys: pytest.CaptureFixture[str], smd_dir: Path) -> None:
    flat = _run(capsys, "--data", str(smd_dir), "--seeds", "1", "--prior-events", "0", "--no-name-dimension")
    assert flat["settings"]["prior_events"] == 0.0  # type: ignore[index]
    assert flat["settings"]["name_dimension"] is False  # type: ignore[index]
    with pytest.raises(SystemExit):
        main(["evaluate", "--prior-events", "-1"])
    assert "expected a number in [0, 100]" in capsys.readouterr().err
    assert flat["settings"]["pool_keys"] is False and flat["settings"]["pool_strength"] == 2.0  # type: ignore[index]
    pooled = _run(capsys, "--data", str(smd_dir), "--seeds", "1", "--pool-keys", "--pool-strength", "1")
    assert pooled["settings"]["pool_keys"] is True  # type: ignore[index]
    assert pooled["settings"]["pool_strength"] == 1.0  # type: ignore[index]
    with pytest.raises(SystemExit):
        main(["evaluate", "--pool-strength", "0"])
    assert "expected a positive number" in capsys.readouterr().err


def test_pooling_reaches_the_loop(capsys: pytest.CaptureFixture[str]) -> None:
    """--pool-keys changes what NPO surfaces on NAB (it is measured there and not adopted: README) and leaves the
    static rules alone."""
    folder = real_data("nab")
    default = _run(capsys, "--data", str(folder), "--format", "nab", "--seeds", "1")
    pooled = _run(capsys, "--data", str(folder), "--format", "nab", "--seeds", "1", "--pool-keys")
    assert pooled["npo"]["per_seed"] != default["npo"]["per_seed"]  # type: ignore[index]
    assert pooled["fixed"] == default["fixed"] and pooled["surface_all"] == default["surface_all"]


@functools.cache
def _real_result(fmt: str) -> dict[str, Any]:
    """The evaluation of the real ``fmt`` data with seeds 0 and 1 (once per test session)."""
    return evaluate(read_dataset(real_data(fmt), fmt), EvaluationSettings(seeds=(0, 1)))


@functools.cache
def _nab_half(parity: int) -> dict[str, Any]:
    """The evaluation of one half of the NAB series (sorted names, every other one from ``parity``), seeds 0 and 1:
    the same command on series the other half never saw."""
    dataset = read_dataset(real_data("nab"), "nab")
    names = sorted(s.name for s in dataset.series)[parity::2]
    return evaluate(dataset.subset(names), EvaluationSettings(seeds=(0, 1)))


_SMD_SHORT = pytest.mark.xfail(
    strict=True,
    reason="on SMD NPO ties surfacing everything (seeds 0-1: 0.612 = 0.612): the only kind of prediction worth holding"
    " back is seen too rarely to learn from the engineers' answers (README, Evaluation on real fault data)",
)


@pytest.mark.parametrize("fmt", ["nab", pytest.param("smd", marks=_SMD_SHORT)])
def test_real_data_done_when_npo_f1_beats_every_fixed_threshold_and_surfacing_everything(fmt: str) -> None:
    out = _real_result(fmt)
    rivals = [*out["fixed"].values(), out["surface_all"]]
    assert all(out["npo"]["f1"] > m["f1"] for m in rivals), (out["npo"]["f1"], [m["f1"] for m in rivals])


@pytest.mark.xfail(
    strict=True,
    reason="observed L_align does not fall on seeds 0-1 of either development set: the data's own true L_align"
    " rises (NAB 0.42 -> 0.55, SMD 0.22 -> 0.25 when everything is surfaced); see README",
)
@pytest.mark.parametrize("fmt", ["nab", "smd"])
def test_real_data_done_when_observed_l_align_falls(fmt: str) -> None:
    npo = _real_result(fmt)["npo"]
    assert npo["l_align_last_quarter"] < npo["l_align_first_quarter"]


_ODD_HALF_SHORT = pytest.mark.xfail(
    strict=True,
    reason="the odd half holds 12 predictions, half of them inside a window: NPO ties surfacing everything on seed 1"
    " and holds back one true prediction of a window it catches anyway on seed 0 (README, Evaluation on real"
    " fault data)",
)


@pytest.mark.parametrize("parity", [0, pytest.param(1, marks=_ODD_HALF_SHORT)], ids=["even-half", "odd-half"])
def test_real_data_npo_f1_beats_the_static_rules_on_each_half_of_nab(parity: int) -> None:
    out = _nab_half(parity)
    rivals = [*out["fixed"].values(), out["surface_all"]]
    assert all(out["npo"]["f1"] > m["f1"] for m in rivals), (out["npo"]["f1"], [m["f1"] for m in rivals])
