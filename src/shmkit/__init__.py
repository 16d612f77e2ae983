"""shmkit: shared memory for Python processes on Linux, done properly."""
from ._errors import *  # noqa: F401,F403
