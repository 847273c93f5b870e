"""What every bad-input test checks: exit 2, no traceback, one line naming the problem."""

from __future__ import annotations

import subprocess


def one_line_error(result: subprocess.CompletedProcess, *needles: str,
                   prefix: str = "trainer: error: ") -> str:
    """The single error line of ``result`` (log lines before it aside), which starts with
    ``prefix`` and holds every needle; Hydra's own report must not appear."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith(("WARNING ", "INFO "))]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(prefix), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
