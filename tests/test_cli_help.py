"""Every option of the data command lines explains itself and shows its default, and their
``--help`` answers without importing torch (the simulators never need it)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from data_processing import redvid, trackml_data, trackml_sim

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("parser", "shown"),
    [
        (redvid._build_parser(), "(default: 1000)"),
        (trackml_data._build_parser(), "(default: 10)"),
        (trackml_sim._build_parser(), "(default: 0.15)"),
    ],
    ids=["redvid", "trackml_data", "trackml_sim"],
)
def test_every_data_option_has_help_and_shows_its_default(
    parser: argparse.ArgumentParser, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    bare = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert bare == []
    text = parser.format_help()
    assert shown in text
    silent = [
        a.option_strings[0]
        for a in parser._actions
        if a.option_strings
        and a.default not in (None, argparse.SUPPRESS)
        and "default" not in parser._get_formatter()._expand_help(a)
    ]
    assert silent == []


@pytest.mark.parametrize(
    "module",
    ["data_processing.redvid", "data_processing.trackml_data", "data_processing.trackml_sim"],
)
def test_data_help_loads_no_torch(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--seed" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "data_processing.errors" in imported  # the scan saw the imports
    assert "torch" not in imported


@pytest.mark.parametrize("script", ["evaluation/export_onnx.py", "checkpoint.py"])
def test_tool_help_shows_defaults(script: str) -> None:
    result = subprocess.run(
        [sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    if script.endswith("export_onnx.py"):
        assert "(default: 0.0001)" in result.stdout
