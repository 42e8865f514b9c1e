"""Dagster Components for HPC: assets declared in YAML that run locally or on Slurm clusters."""

from components.slurm_asset import SlurmAssetComponent

__all__ = ["SlurmAssetComponent"]
