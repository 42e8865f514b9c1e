"""Root feature media/sample: one sample per clip directory, with a provenance value per field.

A clip has frames (frames.txt) and audio (audio.txt); each field's provenance is the content hash
of its file, so editing the frames makes crops stale and leaves transcripts alone.
"""

import argparse
from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

from hpc_runtime.job import FeatureJob, file_signature


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="workloads/example_media")
    args = parser.parse_args()
    with open_dagster_pipes() as pipes:
        source = Path(args.source).resolve()
        clips = sorted(p for p in source.iterdir() if p.is_dir())
        frame = pl.DataFrame(
            {
                "sample_id": [c.name for c in clips],
                "path": [str(c) for c in clips],
                "frames_sig": [file_signature(str(c / "frames.txt"), content=True) for c in clips],
                "audio_sig": [file_signature(str(c / "audio.txt"), content=True) for c in clips],
            },
            schema={"sample_id": pl.String, "path": pl.String, "frames_sig": pl.String, "audio_sig": pl.String},
        )
        job = FeatureJob.from_env()
        job.emit(frame, provenance={"frames": "frames_sig", "audio": "audio_sig"})
        pipes.log.info(f"listed {frame.height} clip(s) under {source}")


if __name__ == "__main__":
    main()
