"""Prefect flows of hpmcore.

Importing this package sets the process environment the flows need *before* Prefect is imported:
Prefect's home and MLflow's store under the project's state folder, a startup timeout that suits
2-core machines, and telemetry off. Values already set in the environment win.
"""

from flows.settings import configure_environment

configure_environment()
