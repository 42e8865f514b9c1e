import pytest

from components.core.metrics import job_metrics
from components.core.scheduler import QueueState, SlurmClient, parse_job_id, parse_queue_states


@pytest.mark.parametrize(("text", "job_id"), [("42\n", "42"), ("42;cluster\n", "42"), ("warning: x\n1234\n", "1234")])
def test_parse_job_id(text, job_id):
    assert parse_job_id(text) == job_id


def test_parse_job_id_rejects_garbage():
    with pytest.raises(ValueError, match="no job id"):
        parse_job_id("sbatch: error: Batch job submission failed\n")


SACCT = "\n".join(
    [
        "17|OUT_OF_MEMORY|0:125|00:00:04|4|2026-11-21T10:00:00|2026-11-21T10:00:03|2026-11-21T10:00:07|1|2|00:03.500|billing=2,cpu=2,gres/gpu=1,mem=100M,node=1|localhost||00:05:00|job",
        "17.batch|OUT_OF_MEMORY|0:125|00:00:04|4|2026-11-21T10:00:03|2026-11-21T10:00:03|2026-11-21T10:00:07|1|2|00:03.500|cpu=2,mem=100M,node=1|localhost|150120K||job",
        "17.extern|COMPLETED|0:0|00:00:04|4|2026-11-21T10:00:03|2026-11-21T10:00:03|2026-11-21T10:00:07|1|2|00:00:00|billing=2|localhost|900K||job",
    ]
)


def test_sacct_record_and_metrics():
    record = SlurmClient(transport=None)._parse_sacct("17", SACCT)
    assert (record.state, record.exit_code, record.signal, record.max_rss) == ("OUT_OF_MEMORY", 0, 125, "150120K")
    metrics = job_metrics(record)
    assert metrics["queue_wait_s"] == 3.0
    assert metrics["cpu_efficiency"] == round(3.5 / (4 * 2), 4)
    assert metrics["max_rss_mb"] == 146.6
    assert metrics["gpus"] == 1
    assert metrics["node_hours"] == round(4 / 3600, 6)


def test_cancelled_by_uid_is_cancelled():
    line = "9|CANCELLED by 1000|0:15|00:00:01|1|2026-11-21T10:00:00|2026-11-21T10:00:00|2026-11-21T10:00:01|1|1|00:00:00|cpu=1|localhost||00:01:00|job"
    assert SlurmClient(transport=None)._parse_sacct("9", line).state == "CANCELLED"


def test_queue_states_parse_plain_and_array_ids_and_skip_noise():
    text = ("41|RUNNING|None|hpc-node1|0|\n"
            "42|PENDING|Resources||2|\n"
            "43_7|RUNNING|None|hpc-node2|0|\n"
            "43_[8-10%2]|PENDING|JobArrayTaskLimit||0|\n"
            "squeue: warning: something odd\n")
    states = parse_queue_states(text)
    assert states == {
        "41": QueueState("RUNNING", "None", "hpc-node1", 0),
        "42": QueueState("PENDING", "Resources", "", 2),
        "43_7": QueueState("RUNNING", "None", "hpc-node2", 0),
        "43_[8-10%2]": QueueState("PENDING", "JobArrayTaskLimit", "", 0),
    }


def test_accountings_parse_each_job_from_one_answer():
    text = SACCT + "\n" + "18|COMPLETED|0:0|00:00:01|1|2026-11-21T10:00:00|2026-11-21T10:00:00|2026-11-21T10:00:01|1|1|00:00:00|cpu=1|localhost||00:01:00|job"
    records = SlurmClient(transport=None).parse_accountings(["17", "18", "19"], text)
    assert sorted(records) == ["17", "18"]
    assert (records["17"].state, records["17"].max_rss, records["18"].state) == ("OUT_OF_MEMORY", "150120K", "COMPLETED")


@pytest.mark.parametrize("bad", ["1;true", "$(id)", "1 2"])
def test_batched_queries_refuse_malformed_ids_before_any_command(bad):
    client = SlurmClient(transport=None)  # any command would fail on None
    with pytest.raises(ValueError):
        client.queue_states(["1", bad])
    with pytest.raises(ValueError):
        client.accountings(["1", bad])
