"""Feature media/transcript: reads only the audio of new or stale clips (its field depends on audio)."""

from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

from hpc_runtime.job import FeatureJob


def main() -> None:
    with open_dagster_pipes() as pipes:
        job = FeatureJob.from_env()
        samples = job.samples()
        texts = [(Path(p) / "audio.txt").read_text().strip() for p in samples["path"]]
        job.write(samples.select("sample_id").with_columns(text=pl.Series(texts, dtype=pl.String)))
        pipes.log.info(f"transcribed {samples.height} clip(s): {', '.join(samples['sample_id'])}")


if __name__ == "__main__":
    main()
