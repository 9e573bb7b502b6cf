#!/usr/bin/env python3
"""Lists functions longer than a limit (default 80 lines) outside test modules, and files
longer than 800 lines. Counts from the `fn` line to its closing brace at the same indent."""
import re, sys, pathlib
limit = int(sys.argv[1]) if len(sys.argv) > 1 else 80
root = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else 'src')
bad = 0
for p in sorted(root.rglob('*.rs')):
    lines = p.read_text().splitlines()
    if p.name == 'tests.rs' or 'tests' in p.parent.parts[len(root.parts):]:
        continue
    # stop at a test module
    end = len(lines)
    for i, l in enumerate(lines):
        if l.startswith('#[cfg(test)]'):
            end = i
            break
    if end > 800:
        print(f'{p}: {end} lines')
        bad += 1
    for i in range(end):
        m = re.match(r'^(\s*)(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)', lines[i])
        if not m or lines[i].rstrip().endswith(';'):
            continue
        indent = m.group(1)
        for j in range(i + 1, end):
            if lines[j] == indent + '}':
                n = j - i + 1
                if n > limit:
                    print(f'{p}:{i+1}: fn {m.group(7)} {n} lines')
                    bad += 1
                break
sys.exit(1 if bad else 0)
