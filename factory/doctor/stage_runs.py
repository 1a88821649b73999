"""torchrun worker of the doctor's layout check: several `factory.stage` commands, one after another, in one launch.

Usage: torchrun --standalone --nproc-per-node 2 -m factory.doctor.stage_runs VERB CONFIG [CONFIG ...]
Each CONFIG runs as `python -m factory.stage VERB --config CONFIG` runs it, in the same processes: their start
(torch and Megatron imports, most of a tiny run's cost) is paid once, and the process group is kept across the runs
(the runtime's kept_process_group). The first run that fails ends the launch with its exit code.
"""

from __future__ import annotations

import sys

from factory import stage
from factory.config import load_config
from factory.errors import FactoryError, report
from factory.process_exit import exit_process


def main(argv: list[str]) -> int:
    from factory.runtime.runtime import kept_process_group

    verb, configs = argv[0], argv[1:]
    try:
        runtime = load_config(configs[0]).runtime
    except FactoryError as e:
        return report(e)
    with kept_process_group(runtime):
        for config in configs:
            code = stage.main([verb, "--config", config])
            if code:
                return code
    return 0


if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
