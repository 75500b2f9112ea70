"""Regenerate the README's flag availability table from portclone's flag table."""

import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "src"))

from portclone._docs import BEGIN, END, availability_table

readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text()
new, count = re.subn(re.escape(BEGIN) + ".*?" + re.escape(END), lambda m: availability_table(),
                     text, flags=re.S)
if count != 1:
    sys.exit("README.md has no flag-table markers")
readme.write_text(new)
print("README.md flag table updated" if new != text else "README.md flag table already current")
