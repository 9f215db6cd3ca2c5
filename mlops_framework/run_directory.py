"""The Hydra callback that makes a run's (or a sweep's) directory under the home before Hydra does: a home
that cannot be written (read-only, another user's, a file in the way) is then one message and exit 2, where
Hydra would print its traceback and exit 1. Nothing is written before it."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

EXIT_USER_ERROR = 2


class RunDirectoryCallback(Callback):
    def on_run_start(self, config, **kwargs):
        make_output_dir(config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs):
        make_output_dir(config.hydra.sweep.dir)


def make_output_dir(directory):
    try:
        Path(str(directory)).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"mlops: error: cannot create the output directory {directory}: {error.strerror or error} "
              f"(set MLOPS_HOME or paths.home to a directory you can write; nothing was written)", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
