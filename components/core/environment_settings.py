"""The `environment:` section of a cluster profile: where the job's Python comes from.

Split from profiles.py because it is its own concern: the models here say *what* the job
environment is; components/core/environments.py makes it exist on the cluster.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.core import shell


class StrictModel(BaseModel):
    """Profile sections refuse unknown keys and cannot be changed after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VenvSettings(StrictModel):
    requirements: str = Field("workloads/requirements.txt", description="Locked requirements, relative to the project.")
    python: str = Field("python3", description="Interpreter the venv is built from, after `modules` are loaded.")
    modules: list[str] = Field(
        [],
        description="Modules that provide that Python, loaded in order when the venv is built and in every job. "
        "A glob after the family (python/3.1[123]*) takes the newest match `module avail` lists on the login "
        "node when the venv is first built; the exact name is then fixed in the venv's hpc-activate.sh.",
    )

    extra_index_urls: list[str] = Field(
        [],
        description="Package indexes besides PyPI for the venv, such as PyTorch's "
        "(https://download.pytorch.org/whl/cpu) for the +cpu torch of requirements-docling.txt.",
    )

    gpu_torch: Literal["cuda", "as_locked"] = Field(
        "cuda",
        description="For jobs that ask for GPUs: 'cuda' installs PyPI's torch of the same version (a CUDA 12 "
        "build on Linux x86_64) in place of a '+cpu' pin, from gpu_extra_index_urls; 'as_locked' keeps the pin.",
    )
    gpu_extra_index_urls: list[str] = Field([], description="Indexes for GPU jobs' venvs, in place of extra_index_urls.")
    gpu_note: str | None = Field(None, description="What the site's GPU nodes offer for CUDA, shown in previews of GPU jobs.")
    for_gpus: bool = Field(False, description="Set by the component for a job that asks for GPUs; not needed in YAML.")

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        return [shell.check_module_pattern(v) for v in value]

    @field_validator("extra_index_urls", "gpu_extra_index_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("https://", "http://", "file://")) or any(c.isspace() for c in url):
                raise ValueError(f"{url!r} is not an index URL (https://...)")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value: str) -> str:
        return shell.check_line(value)


class PixiPackSettings(StrictModel):
    archive: str = Field(description="Local path of the pixi-pack archive (environment.tar).")


class ApptainerSettings(StrictModel):
    image: str = Field(description="Image path on the cluster (.sif).")
    bind: list[str] = []
    executable: str = "apptainer"

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: list[str]) -> list[str]:
        for item in value:
            shell.check_line(item)
        return value


class EnvironmentSettings(StrictModel):
    strategy: Literal["preinstalled", "venv", "pixi_pack", "apptainer"] = Field(
        "preinstalled",
        description="How the job finds Python: venv (built on the login node from locked requirements, the "
        "site profiles' default), preinstalled (python + modules you manage), pixi_pack (an uploaded packed "
        "environment), apptainer (inside an image).",
    )
    venv: VenvSettings = VenvSettings()
    pixi_pack: PixiPackSettings | None = None
    apptainer: ApptainerSettings | None = None
    provides: list[str] = Field(
        [],
        description="Python modules a preinstalled, pixi_pack or apptainer Python is known to import "
        "(dagster_pipes at least); checked on the login node before the first job. A venv needs none: "
        "it is verified when built.",
    )
    module_purge: bool = False
    modules: list[str] = []
    setup: list[str] = Field([], description="Shell lines run before the workload (one command per item).")
    env: dict[str, str] = {}
    python: str = Field("python3", description="Interpreter for the python launcher; 'current' = Dagster's own.")

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        return [shell.check_module_name(v) for v in value]

    @field_validator("provides")
    @classmethod
    def _provides(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.replace("_", "a").replace(".", "a").isalnum() or name[0].isdigit():
                raise ValueError(f"{name!r} is not a Python module name (such as dagster_pipes)")
        return value

    @field_validator("setup")
    @classmethod
    def _setup(cls, value: list[str]) -> list[str]:
        return [shell.check_line(v) for v in value]

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, Any]) -> dict[str, str]:
        for name in value:
            shell.check_env_name(name)
        return {k: str(v) for k, v in value.items()}
