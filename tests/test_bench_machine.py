"""bench/machine.py: holding the libraries to another CPU's instructions (--isa) and naming
the kind of CPU a result was measured on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import machine


@pytest.fixture()
def clean_env(monkeypatch):
    """The variables --isa sets, unset for the test and put back as they were after it (set
    first: monkeypatch records nothing for deleting a variable that is not there, and one that
    hold_to sets would then outlive the test, reaching later tests' worker processes)."""
    for env in machine.HELD_TO.values():
        for key in env:
            monkeypatch.setenv(key, "")
            monkeypatch.delenv(key)
    return monkeypatch


def test_each_isa_sets_its_variables_and_names_the_kind(clean_env):
    machine.hold_to("native")
    assert not any(k in os.environ for env in machine.HELD_TO.values() for k in env)
    machine.hold_to("avx2")
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert machine.cpu_kind().endswith("-as-avx2")


def test_avx512_on_a_cpu_without_it_is_one_line_and_exit_2(clean_env, capsys):
    clean_env.setattr(machine, "cpu_info", lambda: {"flags": "sse2 avx avx2 fma"})
    with pytest.raises(SystemExit) as stopped:
        machine.hold_to("avx512")
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no AVX-512" in err
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ
