#!/usr/bin/env python3
"""Entry point: python3 test-vectors/proofs/verify.py (the code is in the verify/ package)."""
import os
import sys

sys.dont_write_bytecode = True  # leave no __pycache__ in test-vectors/

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify.vectors import main  # noqa: E402  (the package verify/, beside this file)

sys.exit(main())
