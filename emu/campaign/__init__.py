"""Fault-injection campaigns: programs x fault sweeps x policies, golden runs first, each
experiment's outcome a row of a SQLite database (resumable), run on local worker
processes or a Dask cluster, with fast-forward by forking runs already at their trigger."""
