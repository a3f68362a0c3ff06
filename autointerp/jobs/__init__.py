"""Background jobs: pipeline commands run as subprocesses of the package's own CLI.

job: launching, listing, cancelling a job (its folder under <data>/jobs); args: a config as CLI
flags and several commands as one argv. Knows command names (config.COMMAND_NAMES), never the stages.
"""

from autointerp.jobs.args import config_args, interpret_args, join_steps, split_steps
from autointerp.jobs.job import STATES, VANISHED, Job, get_job, launch, launch_steps, list_jobs

__all__ = ["STATES", "VANISHED", "Job", "config_args", "get_job", "interpret_args", "join_steps", "launch",
           "launch_steps", "list_jobs", "split_steps"]
