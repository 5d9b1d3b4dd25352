"""The default suite's own arrangement: what keeps `make test` at one smoke run on two workers."""

from __future__ import annotations

import pytest


def test_the_smoke_runs_tests_share_one_worker(request) -> None:
    """Under `make test` (pytest-xdist, --dist loadgroup) every test that reads the session's smoke run carries the
    group in its id, so they all go to one worker and the smoke run is built once (with pytest 9.2, xdist 3.8.0's
    group ids were silently dropped and both workers built it: 7 more minutes)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under `pytest -n N --dist loadgroup` (make test)")
    readers = [i for i in request.session.items if "smoke_run" in getattr(i, "fixturenames", ())]
    if not readers:
        pytest.skip("no test that reads the smoke run is collected")
    assert all(i.nodeid.endswith("@smoke_run") for i in readers), [i.nodeid for i in readers][:3]
