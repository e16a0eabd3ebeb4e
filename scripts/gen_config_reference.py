#!/usr/bin/env python3
"""Prints the trial-config reference table (Markdown) from common/trial_schema.cc.

The README's "Trial config reference" is this output; tests/common/docs_test.cc fails when the
two disagree, so after changing the schema run:
    python3 scripts/gen_config_reference.py
and paste the table into README.md.
"""
import pathlib
import re

src = (pathlib.Path(__file__).resolve().parent.parent / "common" / "trial_schema.cc").read_text()
body = src[src.index("std::vector<ConfigKey> BuildKeys()"):src.index("std::string Suggest(")]

print("| key | type | default | meaning |")
print("|---|---|---|---|")
for m in re.finditer(r'(Int|Num|Str|Bool)\("(\w+)",\s*(.*?)\),\n', body, re.S):
    kind, name, rest = m.groups()
    if kind == "Str":
        mm = re.match(r'"([^"]*)",\s*\{(.*?)\},\s*"(.*)"', rest, re.S)
        default, choices, help_ = '"%s"' % mm.group(1), mm.group(2).replace('"', "").strip(), mm.group(3)
        typ = "string" + (" (%s)" % choices.replace(", ", " \\| ") if choices else "")
    elif kind == "Bool":
        mm = re.match(r"(\w+),\s*\"(.*)\"", rest, re.S)
        default, help_, typ = mm.group(1), mm.group(2), "bool"
    else:
        mm = re.match(r'([^,]+),\s*([^,]+),\s*([^,]+),\s*"(.*?)"', rest, re.S)
        raw = mm.group(1).strip()
        default = str(int(raw)) if kind == "Int" else repr(float(raw))
        help_, typ = mm.group(4), ("int" if kind == "Int" else "number")
    help_ = re.sub(r'"\s*\n\s*"', "", help_).replace("|", "\\|")
    print("| `%s` | %s | `%s` | %s |" % (name, typ, default, help_))
