"""What ``GET /tasks/{id}/audit`` returns: the auditor's chain checks (``chain.audit``:
every payout, reward, score and leader re-derived from the events) and every recorded
blob fetched from this cloud's store and hashed. Cheap enough to serve: the rounds are
not re-executed (that is ``bmfl audit --reexecute``, on the auditor's own machine)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from chain.audit import Auditor, TaskAudit


class AuditView(BaseModel):
    task_id: int
    block: int = Field(description="chain head the audit read")
    passed: bool = Field(description="every comparison equal and every blob found with its recorded digest")
    rounds: int = Field(description="finalized rounds")
    comparisons: int = Field(description="numbers re-derived from the chain's events and compared")
    blobs: int = Field(description="recorded model blobs fetched and hashed")
    problems: list[str] = Field(description="each comparison or blob that failed, in words")
    reexecuted: bool = Field(False, description="always false here: re-execution is the auditor's job (bmfl audit --reexecute)")


def audit_view(audit: TaskAudit, block: int) -> AuditView:
    problems = [c.line() for c in audit.comparisons if not c.ok]
    problems += [f"blob {b.blob.source} {b.blob.cid}: {b.status} {b.detail}".strip() for b in audit.blobs if not b.ok]
    return AuditView(
        task_id=audit.task_id, block=block, passed=audit.passed, rounds=audit.rounds, comparisons=len(audit.comparisons),
        blobs=len(audit.blobs), problems=problems,
    )  # fmt: skip


class AuditCache:
    """One audit per task and chain head: the events cannot change until a block is mined."""

    def __init__(self, auditor: Auditor) -> None:
        self.auditor = auditor
        self._latest: dict[int, AuditView] = {}

    def get(self, task_id: int, block: int, fetch) -> AuditView:
        cached = self._latest.get(task_id)
        if cached is None or cached.block != block:
            cached = self._latest[task_id] = audit_view(self.auditor.audit(task_id, fetch), block)
        return cached
