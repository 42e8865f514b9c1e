"""Feature media/crop: reads only the frames of new or stale clips (its field depends on frames)."""

from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

from hpc_runtime.job import FeatureJob


def main() -> None:
    with open_dagster_pipes() as pipes:
        job = FeatureJob.from_env()
        samples = job.samples()
        crops, widths = [], []
        for path in samples["path"]:
            first = (Path(path) / "frames.txt").read_text().splitlines()[0]
            crops.append(first[:8])
            widths.append(len(first))
        job.write(samples.select("sample_id").with_columns(crop=pl.Series(crops, dtype=pl.String), width=pl.Series(widths, dtype=pl.Int64)))
        pipes.log.info(f"cropped {samples.height} clip(s): {', '.join(samples['sample_id'])}")


if __name__ == "__main__":
    main()
