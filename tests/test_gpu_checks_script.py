"""`scripts/gpu_checks.sh` runs on a lent GPU whose minutes are few: every bench command it holds must be accepted
by that script's own argument parser, which this test checks on the CPU without running the benchmarks."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_checks.sh"
COMMAND = re.compile(r'"\$py" scripts/(\w+)\.py(.*)$')


def _commands() -> list[tuple[str, list[str]]]:
    """(script name, its arguments) of every `"$py" scripts/NAME.py ...` line, continuation lines joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        match = COMMAND.search(line)
        if match:
            found.append((match.group(1), shlex.split(match.group(2).replace('"$out/', '"OUT/'))))
    return found


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        super().__init__("parsed")
        self.namespace = namespace


def test_the_script_holds_the_bench_commands():
    names = [name for name, _ in _commands()]
    assert {"bench_generator", "bench_decomposer", "bench_decomposer_training", "bench_renderer"} <= set(names)


@pytest.mark.parametrize("name,args", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_bench_command_parses(name, args, monkeypatch):
    """The script's main() gets as far as its parsed arguments: argparse accepts every option and choice (an
    unknown option or a choice the script dropped would exit with status 2 and lose a GPU call)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, argv=None, namespace=None):
        raise _Parsed(original(self, argv, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    module = load_script(name)
    with pytest.raises(_Parsed) as parsed:
        module.main()
    ns = vars(parsed.value.namespace)
    if "--json" in args:
        assert str(ns["json"]).startswith("OUT/")
    if "--device" in args:
        assert ns["device"] == args[args.index("--device") + 1]


def test_the_tests_phase_names_files_and_functions_that_exist():
    """The `tests` phase runs pytest on named files and calls the CUDA build's functions by name."""
    from stylegan_disentangle.ops import cuda_build

    text = SCRIPT.read_text().replace("\\\n", " ")
    files = re.findall(r"\btests/\w+\.py\b", text)
    assert files
    root = SCRIPT.parents[1]
    assert all((root / f).is_file() for f in files), [f for f in files if not (root / f).is_file()]
    for function in re.findall(r"cuda_build\.(\w+)\(", text):
        assert callable(getattr(cuda_build, function, None)), function
