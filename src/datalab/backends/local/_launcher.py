"""Runs between spawning and the service's own program (``python -I -S _launcher.py CONFIG``).

It is a separate, tiny, stdlib-only process (rather than a ``preexec_fn``, unsafe in a threaded
asyncio server) that, still privileged, joins the service's cgroups and sets its rlimits and CPU
affinity, then drops to the service's account and ``exec``s the service: the pid the platform
spawned *is* the service's pid, and everything the service starts inherits the limits.
"""

import json
import os
import resource
import signal
import sys


def main() -> None:
    config = json.loads(sys.argv[1])
    pid = str(os.getpid())
    for procs_file in config.get("cgroups", []):
        with open(procs_file, "w") as handle:
            handle.write(pid)
    if config.get("rlimit_as"):
        limit = int(config["rlimit_as"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if config.get("cpus"):
        os.sched_setaffinity(0, config["cpus"])
    os.chdir(config["cwd"])
    os.umask(0o077)  # files the service creates are private to its account
    if config.get("uid") is not None:
        os.setgroups([])
        os.setgid(int(config["gid"]))
        os.setuid(int(config["uid"]))
    # Python ignores these at start-up; the service must get the defaults (as subprocess does).
    for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    argv = config["argv"]
    try:
        os.execv(argv[0], argv)  # noqa: S606 - argv, not a shell line, by design
    except OSError as exc:
        print(f"datalab: cannot execute {argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
        os._exit(127)


if __name__ == "__main__":
    main()
