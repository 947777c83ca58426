"""Run the llm4rec CLI, then print this process's peak resident memory (VmHWM, MiB) on the last line.

VmHWM belongs to the process image, so unlike ``ru_maxrss`` it does not
inherit the parent's memory across fork + exec.
"""

import re
import sys
from pathlib import Path

from llm4rec.cli.main import main

code = main(sys.argv[1:])
hwm_kib = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(f"peak_rss_mib={hwm_kib / 1024:.1f}")
sys.exit(code)
