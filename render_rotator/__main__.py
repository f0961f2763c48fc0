"""`python -m render_rotator` runs the command line."""

from render_rotator.cli import main

if __name__ == "__main__":
    try:
        main()
    finally:
        # Under `-m` only, CPython ends the process by SIGINT instead of with the command's
        # exit code once any string `exec` (dataclasses and namedtuple build their methods
        # with one) ended in a KeyboardInterrupt, even one caught later: a SIGTERM that
        # stopped an import this way made the exit status "killed by SIGINT". The flag is
        # reset by the next string `exec`.
        exec("")  # noqa: S102 - an empty string, run only for that effect
