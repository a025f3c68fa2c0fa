"""Our ctypes ``t30_stats_t`` matches the C one, measured by compiling against the headers.

A mismatch would not crash: it would silently report wrong page counts and resolutions.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from faxbox.fax.spandsp import T30Stats

PROGRAM = """
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <spandsp.h>

#define FIELD(f) printf(#f " %zu %zu\\n", offsetof(t30_stats_t, f), sizeof(((t30_stats_t *) 0)->f));

int main(void)
{
    printf("sizeof %zu %zu\\n", sizeof(t30_stats_t), sizeof(t30_stats_t));
    FIELDS
    return 0;
}
"""


def test_t30_stats_layout_matches_the_installed_headers(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        if os.environ.get("CI"):
            pytest.fail("gcc is required in CI to check the spandsp struct layout")
        pytest.skip("gcc not installed")
    names = [name for name, _ in T30Stats._fields_]
    source = tmp_path / "layout.c"
    source.write_text(PROGRAM.replace("FIELDS", " ".join(f"FIELD({n})" for n in names)))
    binary = tmp_path / "layout"
    # libspandsp-dev's headers include tiffio.h; nothing needs linking for offsetof.
    subprocess.run([gcc, "-o", str(binary), str(source)], check=True, capture_output=True)
    lines = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    measured = {
        name: (int(offset), int(size))
        for name, offset, size in (line.split() for line in lines.splitlines())
    }
    assert measured.pop("sizeof")[0] == ctypes.sizeof(T30Stats)
    ours = {name: (getattr(T30Stats, name).offset, getattr(T30Stats, name).size) for name in names}
    assert ours == measured
