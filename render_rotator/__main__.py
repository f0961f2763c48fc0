"""`python -m render_rotator` runs the command line."""

from render_rotator.cli import main

if __name__ == "__main__":
    main()
