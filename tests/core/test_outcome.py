import pytest

from components.core.outcome import decide, pending_verdict
from components.core.scheduler import Accounting, QueueState


def _record(state, exit_code=0, signal=0, batch=(0, 0)):
    return Accounting("7", state, exit_code, signal, {}, "", batch)


@pytest.mark.parametrize(
    ("queue", "record", "marker", "expected"),
    [
        # sacct says COMPLETED, the script wrote 0
        (None, _record("COMPLETED"), 0, ("COMPLETED", 0, None, "sacct", "exit code 0")),
        # exit 3 with accounting
        (None, _record("FAILED", 3), 3, ("FAILED", 3, None, "sacct", "exit code 3")),
        # slurmdbd down: squeue still lists the finished job
        (QueueState("FAILED", "NonZeroExitCode", "n1"), None, 3, ("FAILED", 3, None, "squeue", "exit code 3")),
        # neither scheduler knows the job any more: the exit-code file decides
        (None, None, 3, ("FAILED", 3, None, "exit-code file", "exit code 3")),
        (None, None, 0, ("COMPLETED", 0, None, "exit-code file", "exit code 0")),
        # the cgroup killed the workload, bash recorded 137; sacct's 0:125 is Slurm's own mark, no signal
        (None, _record("OUT_OF_MEMORY", 0, 125, (0, 125)), 137,
         ("OUT_OF_MEMORY", 137, 9, "sacct", "killed by signal 9 (SIGKILL), exit code 137")),
        # time limit: the script itself was killed, no exit-code file; the batch step names the signal
        (None, _record("TIMEOUT", 0, 0, (0, 15)), None, ("TIMEOUT", 143, 15, "sacct", "killed by signal 15 (SIGTERM), exit code 143")),
        (None, _record("CANCELLED", 0, 0, (0, 15)), None, ("CANCELLED", 143, 15, "sacct", "killed by signal 15 (SIGTERM), exit code 143")),
        # NODE_FAIL without any exit information: no exit code is made up
        (None, _record("NODE_FAIL"), None, ("NODE_FAIL", None, None, "sacct", "no exit code")),
        # nothing at all: never success
        (None, None, None, ("UNKNOWN", None, None, "none", "no exit code")),
    ],
)
def test_decide(queue, record, marker, expected):
    outcome = decide(queue, record, marker)
    state, code, sig, evidence, text = expected
    assert (outcome.state, outcome.exit_code, outcome.signal, outcome.evidence) == (state, code, sig, evidence)
    assert outcome.exit_text().startswith(text)
    assert outcome.succeeded == (state == "COMPLETED" and code == 0)
    # The metadata never contradicts the message.
    meta = outcome.metadata()
    assert meta.get("exit_code") == code and meta.get("signal") == sig
    if code is not None:
        assert f"exit code {code}" in outcome.exit_text()


def test_active_accounting_is_not_an_outcome():
    # sacct still says RUNNING (records lag): that is not the end, and not success
    outcome = decide(None, _record("RUNNING"), None)
    assert (outcome.state, outcome.succeeded) == ("UNKNOWN", False)
    assert "stopped before it finished" in outcome.cause()


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("DependencyNeverSatisfied", "permanent"),
        ("JobHeldAdmin", "permanent"),
        ("QOSMaxWallDurationPerJobLimit", "permanent"),
        ("AssocMaxNodesPerJobLimit", "permanent"),
        ("PartitionTimeLimit", "permanent"),
        ("JobHeldUser", "suspicious"),
        ("ReqNodeNotAvail, Reserved for maintenance", "suspicious"),
        ("Resources", None),
        ("Priority", None),
        ("BeginTime", None),
        ("Dependency", None),
        ("QOSGrpCpuLimit", None),  # a group limit clears when other jobs end
    ],
)
def test_pending_verdict(reason, kind):
    verdict = pending_verdict(reason)
    assert (verdict[0] if verdict else None) == kind
    if verdict and kind == "permanent":
        assert verdict[2], "a permanent reason comes with a fix"
