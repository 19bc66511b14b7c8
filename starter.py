"""`python starter.py ...`: the relman CLI (same as the `relman` command)."""

from relman.starter import main

if __name__ == "__main__":
    main()
