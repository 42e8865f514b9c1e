"""Dagster Components for HPC: assets declared in YAML that run locally or on Slurm clusters."""

from components.metaxy_feature import MetaxyFeatureComponent
from components.ray_docling import RayDoclingComponent
from components.slurm_asset import SlurmAssetComponent

__all__ = ["MetaxyFeatureComponent", "RayDoclingComponent", "SlurmAssetComponent"]
