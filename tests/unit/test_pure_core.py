"""The pure core imports only the standard library (checked in a fresh interpreter)."""

import subprocess
import sys


def test_core_modules_import_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "import tracker.core.machine, tracker.definitions, tracker.state, tracker.events, tracker.errors\n"
        "third = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'faust','mode','aiokafka','orjson','yaml','prometheus_client','rocksdict'})\n"
        "print(','.join(third))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
