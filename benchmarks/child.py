"""``python -m benchmarks.child MODULE:FUNCTION JSON_KWARGS``: one measurement in a fresh process.

Prints the function's result as JSON on the last line of stdout, with ``peak_rss`` (bytes): this
process's peak resident set size from ``getrusage(RUSAGE_SELF)``, imports included.
"""

import importlib
import json
import resource
import sys


def main(argv: list[str]) -> int:
    module_name, _, function_name = argv[0].partition(":")
    kwargs = json.loads(argv[1]) if len(argv) > 1 else {}
    result = getattr(importlib.import_module(module_name), function_name)(**kwargs) or {}
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    sys.stdout.flush()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
