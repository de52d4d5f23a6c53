"""Runs python-ironicclient's `baremetal` commands one after another in one process.

Used by tests/it/ironic_parity.rs: starting the client costs seconds of imports per command,
which a corpus of CLI steps against two servers cannot afford. Each command still gets a fresh
`baremetal` application (the same object `baremetal ARGS...` builds), with its standard output
and error captured.

Reads one JSON array of arguments per line on stdin; prints one JSON line per command:
{"code": <exit code>, "out": <stdout>, "err": <stderr>}. OS_AUTH_TYPE, OS_ENDPOINT and HOME
come from the environment, as for the real command.
"""

import contextlib
import io
import json
import sys

from ironicclient import shell


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = shell.App().run(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # noqa: BLE001 - reported as the command's failure
            err.write("%s: %s\n" % (type(exc).__name__, exc))
            code = 1
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def main():
    real_stdout = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        result = run(json.loads(line))
        real_stdout.write(json.dumps(result) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    main()
