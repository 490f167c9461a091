"""Runs between spawning and the service's own program (``python -I -S _launcher.py CONFIG``).

It is a separate, tiny, stdlib-only process (rather than a ``preexec_fn``, unsafe in a threaded
asyncio server) that, still privileged, joins the service's cgroups and sets its rlimits and CPU
affinity, then drops to the service's account and ``exec``s the service: the pid the platform
spawned *is* the service's pid, and everything the service starts inherits the limits.

When the recipe has a ``vault_env`` section (``DATALAB_VAULT_ENV`` in the environment), it
first reads those Vault KV v2 secrets with the service's own token and adds their keys to the
service's environment, at every start, as Onyxia's init script does in a container: values are
never written to disk nor seen by the platform. A secret that cannot be read stops the start
with a message naming the secret and the reason (never a value).
"""

import json
import os
import resource
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, NoReturn

VAULT_ENV_VARIABLE = "DATALAB_VAULT_ENV"
VAULT_TIMEOUT_S = 15
EXIT_CONFIG = 78  # EX_CONFIG


def fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    print(f"datalab: {message}", file=sys.stderr, flush=True)
    os._exit(code)


def read_secret(address: str, token: str, mount: str, path: str) -> dict[str, Any]:
    url = f"{address.rstrip('/')}/v1/{urllib.parse.quote(mount)}/data/{urllib.parse.quote(path)}"
    request = urllib.request.Request(url, headers={"X-Vault-Token": token})  # noqa: S310
    what = f"cannot read the secret {path!r} from {address}"
    try:
        with urllib.request.urlopen(request, timeout=VAULT_TIMEOUT_S) as answer:  # noqa: S310
            body = json.load(answer)
    except urllib.error.HTTPError as exc:
        reason = {403: "permission denied or token expired", 404: "no such secret"}
        fail(f"{what}: HTTP {exc.code} ({reason.get(exc.code, exc.reason)}); check vault.secret")
    except (OSError, ValueError) as exc:
        fail(f"{what}: {exc}")
    data = (body.get("data") or {}).get("data")
    if not isinstance(data, dict):
        fail(f"{what}: no such secret (deleted?); check vault.secret")
    return data


def vault_environment(raw: str) -> dict:
    """The environment variables named by the keys of the secrets (later secrets win)."""
    config = json.loads(raw)
    variables = {}
    for path in config["secrets"]:
        data = read_secret(config["address"], config["token"], config["mount"], path)
        for key, value in data.items():
            if not key.isidentifier() or not key.isascii():
                fail(f"the secret {path!r} has a key {key!r} that is not an environment name")
            variables[key] = str(value)
    return variables


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
    # before dropping privileges: the service's account may not read the interpreter's
    # standard library, which urllib imports lazily
    environ = dict(os.environ)
    vault = environ.pop(VAULT_ENV_VARIABLE, None)
    if vault:
        environ.update(vault_environment(vault))
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
        os.execve(argv[0], argv, environ)  # noqa: S606 - argv, not a shell line, by design
    except OSError as exc:
        print(f"datalab: cannot execute {argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
        os._exit(127)


if __name__ == "__main__":
    main()
