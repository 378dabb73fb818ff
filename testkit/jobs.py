"""The measurement jobs a test's code runs on this host, recorded as they pass (the real worker runs them)."""

from __future__ import annotations

from typing import Any


def record_local_jobs(monkeypatch: Any) -> list[dict[str, Any]]:
    """Every job ``LocalBackend.measure`` runs from now on (until ``monkeypatch`` undoes it), in order."""
    from edgeopt.runtime.backends.local import LocalBackend

    jobs: list[dict[str, Any]] = []
    measure = LocalBackend.measure

    def recorded(self: Any, job: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
        jobs.append(job)
        return measure(self, job, timeout_s=timeout_s)

    monkeypatch.setattr(LocalBackend, "measure", recorded)
    return jobs
