#!/usr/bin/env python3
"""Finds error returns in src/ that bypass the error detail.

Every error path returns through conc__fail(), conc__fail_sys() or
conc__fail_lit() (src/conc_int.h), which record the sentence
conc_errdetail() shows.  This check reads every src/**/*.c and *.h and
reports each statement

    return <expression naming a CONC_E* code>;
    err = <expression naming a CONC_E* code>;

that does not go through one of them (nor CONC__FAIL_NULL /
CONC__FAIL_TIMEOUT): `return CONC_EINVAL;`, `err = e == ENOMEM ?
CONC_ENOMEM : CONC_ESYS;`.  A code named only in a comparison
(`return err == CONC_ETIMEDOUT ? 1 : 0;`) or as an argument of a call
(`return recv_stop(c, CONC_ECORRUPT, ...);`: the callee's to report) is
not a bare error return.

Exemption marker.  Some bare returns are right: an internal outcome
whose detail the public function's caller sets on the way out (the
queue's CONC_EFULL, turned into a sentence by outcome()), or a value
passed through from a callee that already set the detail.  Such a
statement carries a comment that starts with "detail:" and says where
the detail is set, on its own line or on the line just above:

    return CONC_EFULL; /* detail: outcome() */

Allowlist.  scripts/details_allow.txt lists, one per line, the cases
left in files whose owners have yet to fix them, as "path: statement"
with the statement's whitespace collapsed (a statement that occurs
twice in a file is listed twice).  A case in the list passes; an entry
the tree no longer has is reported as stale (remove it) but does not
fail the check, so fixing a case never breaks the build.

Exit status 0 when every case found is exempt or allowed, else 1 with
one line per case: path:line: statement.
    scripts/check_details.py [ROOT]     (ROOT: the source tree; default
                                         the one this script is in)
"""
import collections
import os
import re
import sys

MARKER = re.compile(r"/\*\s*detail:")
FAILS = re.compile(r"\bconc__fail(_sys|_lit)?\s*\(|\bCONC__FAIL_[A-Z]+\s*\(")
CODE = re.compile(r"\bCONC_E[A-Z0-9_]+\b")
START = re.compile(r"^\s*(return\b|(int\s+)?err\s*=(?!=))")


def strip_comments(text):
    """The text with comments and string contents blanked out, lines
    kept (so line numbers still match)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1:j - 1]) + c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def in_call(expr, pos):
    """Whether pos in expr lies inside the arguments of a call: the code
    is then the callee's to report (recv_stop(c, CONC_ECORRUPT, ...))."""
    stack = []
    for i, c in enumerate(expr[:pos]):
        if c == "(":
            stack.append(bool(re.search(r"[A-Za-z0-9_]\s*$", expr[:i])))
        elif c == ")" and stack:
            stack.pop()
    return any(stack)


def is_value(expr, m):
    """Whether the code at match m in expr is a value returned or
    stored: not one side of an == or != comparison, not an argument."""
    before = expr[:m.start()].rstrip()
    after = expr[m.end():].lstrip()
    return not (before.endswith(("==", "!=")) or
                after.startswith(("==", "!=")) or
                in_call(expr, m.start()))


def cases(path, text):
    """(line number, statement) of each bare error return in text."""
    code = strip_comments(text)
    raw = text.split("\n")
    lines = code.split("\n")
    found = []
    i = 0
    while i < len(lines):
        if not START.match(lines[i]):
            i += 1
            continue
        j = i
        stmt = lines[i]
        while ";" not in stmt and j + 1 < len(lines) and j - i < 12:
            j += 1
            stmt += " " + lines[j]
        stmt = stmt[:stmt.index(";") + 1] if ";" in stmt else stmt
        flat = " ".join(stmt.split())
        if (not FAILS.search(flat) and
                any(is_value(flat, m) for m in CODE.finditer(flat))):
            near = raw[i] + (raw[i - 1] if i > 0 else "")
            near += "".join(raw[i:j + 1])
            if not MARKER.search(near):
                found.append((i + 1, flat))
        i = j + 1
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..")
    root = os.path.abspath(root)
    allow_path = os.path.join(root, "scripts", "details_allow.txt")
    allowed = collections.Counter()
    if os.path.exists(allow_path):
        with open(allow_path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    path, stmt = line.split(": ", 1)
                    allowed[(path, " ".join(stmt.split()))] += 1
    bad = []
    seen = collections.Counter()
    for d, _, files in os.walk(os.path.join(root, "src")):
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            full = os.path.join(d, name)
            rel = os.path.relpath(full, root)
            with open(full, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for line, stmt in cases(rel, text):
                key = (rel, stmt)
                seen[key] += 1
                if seen[key] > allowed[key]:
                    bad.append("%s:%d: %s" % (rel, line, stmt))
    for key, n in sorted(allowed.items()):
        if seen[key] < n:
            print("check_details: stale allowlist entry (%d of %d gone), "
                  "remove it: %s: %s" % (n - seen[key], n, key[0], key[1]))
    if bad:
        print("check_details: error returns without a detail (return "
              "through conc__fail/conc__fail_sys/conc__fail_lit, or mark a "
              "justified one with /* detail: where it is set */):")
        for b in bad:
            print("  " + b)
        return 1
    print("check_details: every error return in src/ sets its detail "
          "(%d allowed, listed in scripts/details_allow.txt)"
          % sum(allowed.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
