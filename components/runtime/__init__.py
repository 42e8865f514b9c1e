"""Code that runs where the metadata store is: in the Dagster process, on a login node, in a job.

This package must not import dagster or anything from `components`: it is shipped into every job
directory as `hpc_runtime` and runs there with only metaxy, polars and dagster-pipes installed.
Imports inside it are relative for that reason.
"""
