"""`python worker.py`: run a relman worker configured from the environment (see README)."""

import os
import sys

from relman.worker import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # sdk-python#300: the SDK can crash at interpreter exit
