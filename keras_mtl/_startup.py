"""Importing TensorFlow without its C++ start-up chatter.

TF 2.21 prints, from two of its libraries each, absl's "All log messages before
absl::InitializeLog()" line and INFO lines about oneDNN, CUDA stubs and CPU instructions — before
`TF_CPP_MIN_LOG_LEVEL` is read, so that variable cannot silence them. `import_tensorflow` imports
it with the process's stderr (file descriptor 2) caught, and writes back everything except those
known lines, so warnings and errors still print. `TF_CPP_MIN_LOG_LEVEL=0` keeps every line.
TensorFlow-free (the CLI calls it before importing anything heavy).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# The start-up lines, by the source file absl names in them (and the CPU-guard line's follow-up).
_CHATTER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:. ]+\d+ (port\.cc|cudart_stub\.cc|cpu_feature_guard\.cc):\d+\] .*"
    r"|To enable the following instructions: .*in other operations, rebuild TensorFlow with the "
    r"appropriate compiler flags\.)$")


def is_startup_chatter(line: str) -> bool:
    return bool(_CHATTER.match(line.rstrip("\r\n")))


def import_tensorflow():
    """`import tensorflow`, its start-up chatter left out (see the module's docstring)."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow

        return tensorflow
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded interpreters)
        import tensorflow

        return tensorflow
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode("utf-8", "replace").splitlines(True)
                    if not is_startup_chatter(line)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8"))
    return tensorflow
