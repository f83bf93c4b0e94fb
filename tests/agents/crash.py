"""Writes a lot of noise to stderr, then a last line, and exits with the given code (never a result)."""

from __future__ import annotations

import sys

code, last_line = int(sys.argv[1]), sys.argv[2]
sys.stderr.write("NOISE-HEAD " + "x" * 5000 + "\n")
sys.stderr.write(last_line + "\n")
print('{"type": "progress", "message": "working"}', flush=True)
sys.exit(code)
