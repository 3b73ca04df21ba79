"""Two TorchServe replicas behind a real HAProxy with /ping health checks; one is killed under load
(harness/failover.py; `make soak` runs the longer version). Skipped without Debian's haproxy, except
under CI=true, where .ci/run installs it."""
from __future__ import annotations

import os
import shutil

import pytest

from harness import failover


@pytest.mark.skipif(shutil.which("haproxy") is None and os.environ.get("CI") != "true",
                    reason="needs Debian's haproxy (apt-get install haproxy)")
@pytest.mark.server
def test_killing_a_replica_fails_only_requests_in_flight_on_it(serving_checkpoint, tmp_path):
    report = failover.run(serving_checkpoint, clients=8, seconds=8, kill_after=3, workdir=tmp_path)
    assert report["marked_down_after_s"] is not None and report["marked_down_after_s"] < 2, report
    assert report["failed_after_marked_down"] == 0, report
    assert report["wrong_replies"] == 0 and report["answered_by_survivor_after_kill"] > 100, report
    assert report["failure_window_s"] <= report["marked_down_after_s"] + 0.5, report
    assert failover.ok(report), report
