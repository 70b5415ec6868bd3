#!/usr/bin/env python3
"""man.py - makes libconc's man pages (man/*.3) from its headers.

The headers are the reference: each module's header opens with a comment
that says what the module is, and every public declaration is preceded by
a comment that starts with its name ("conc_queue_put - appends ...").  This
turns each include/conc/<module>.h into one page, conc_<module>(3):

    NAME         the module and the first sentence of the header's comment
    SYNOPSIS     #include <conc.h> and every exported declaration
    DESCRIPTION  the rest of the header's opening comment
    FUNCTIONS    each declaration's comment, under the names it documents
    TYPES        each options struct and typedef, as declared, with its
                 comments
    SEE ALSO     the other pages

and writes man/index.txt ("function page" per line), from which the build
installs one small page per function that sources its module's page, so
`man conc_queue_put` works.

    scripts/man.py            rewrite man/ from include/
    scripts/man.py --check    fail (exit 1) if man/ is not what the headers
                              make, if a public function has no page, or if
                              groff warns about a page

The pages are committed, so building or installing needs no Python.
"""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "include", "conc")
MAN = os.path.join(ROOT, "man")

# Header -> page name and title; the order is the SEE ALSO order.
PAGES = [
    ("common.h", "conc_common", "errors, timeouts, messages and buffers"),
    ("process.h", "conc_process", "processes"),
    ("thread.h", "conc_thread", "threads"),
    ("sync.h", "conc_sync", "locks, semaphores, events, conditions, "
                            "barriers"),
    ("queue.h", "conc_queue", "queues"),
    ("pipe.h", "conc_pipe", "pipes, connections, listeners and clients"),
    ("shared.h", "conc_shared", "shared memory, values and the dict"),
    ("pool.h", "conc_pool", "worker pools and futures"),
    ("version.h", "conc_version", "the library's version"),
]

API_RE = re.compile(r"\bCONC_API\b[^;]*?\b(conc_[a-z][a-z0-9_]*)\s*\(", re.S)


def version():
    text = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    m = re.search(r"project\(libconc VERSION ([0-9.]+)", text)
    return m.group(1) if m else "?"


def header_text(name):
    """The header's text; version.h is generated, so its template."""
    if name == "version.h":
        text = open(os.path.join(ROOT, "cmake", "version.h.in")).read()
        return text.replace("@PROJECT_VERSION@", "MAJOR.MINOR.PATCH")
    return open(os.path.join(INCLUDE, name)).read()


def comment_lines(block):
    """The text lines of a /* ... */ block, without the comment marks."""
    body = block[2:-2]
    lines = body.split("\n")
    out = []
    for i, line in enumerate(lines):
        s = line.rstrip()
        if i > 0:
            s = re.sub(r"^\s*\* ?", "", s, count=1)
        else:
            s = s.lstrip()
        out.append(s)
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return out


def esc(line):
    """A line of text made safe for groff."""
    line = line.replace("\\", "\\e")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def paragraphs(lines):
    """roff for comment lines: blank lines part paragraphs; indented runs
    (code, tables, lists) are kept as they are, in no-fill mode."""
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            out.append(".PP")
            i += 1
            continue
        if line.startswith("  "):
            out.append(".nf")
            while i < len(lines) and (lines[i].startswith("  ") or
                                      (not lines[i].strip() and i + 1 < len(lines)
                                       and lines[i + 1].startswith("  "))):
                out.append(esc(lines[i]))
                i += 1
            out.append(".fi")
            continue
        out.append(esc(line))
        i += 1
    # No empty paragraph at either end.
    while out and out[0] == ".PP":
        out.pop(0)
    while out and out[-1] == ".PP":
        out.pop()
    return out


def split_blocks(text):
    """(comment, code) pairs in order: each comment with the code after it
    up to the next comment.  Comments inside a declaration (a struct's
    field notes) stay in its code."""
    pairs = []
    pos = 0
    pending = None
    depth = 0
    code = []
    n = len(text)
    while pos < n:
        line_start = text.rfind("\n", 0, pos) + 1
        trailing = text[line_start:pos].strip() != ""
        if text.startswith("/*", pos) and depth == 0 and not trailing:
            end = text.index("*/", pos) + 2
            if pending is not None or code:
                pairs.append((pending, "".join(code)))
            pending = text[pos:end]
            code = []
            pos = end
            continue
        if text.startswith('extern "C" {', pos):
            pos += len('extern "C" {')
            continue
        if text.startswith("/*", pos):
            end = text.index("*/", pos) + 2
            code.append(text[pos:end])
            pos = end
            continue
        ch = text[pos]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        code.append(ch)
        pos += 1
    if pending is not None or code:
        pairs.append((pending, "".join(code)))
    return pairs


def clean_code(code):
    """Declarations worth showing: no preprocessor lines, extern "C"
    braces or blank runs."""
    keep = []
    for line in code.split("\n"):
        s = line.rstrip()
        if s.startswith("#") or s in ('extern "C" {', "}") or \
                s.startswith("CONC_ERRORS") or s.startswith("#define"):
            continue
        keep.append(s)
    text = "\n".join(keep).strip("\n")
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text


def functions_in(code):
    return API_RE.findall(code)


def make_page(hname, page, title):
    text = header_text(hname)
    pairs = split_blocks(text)
    head = comment_lines(pairs[0][0])
    # "conc/queue.h - multiprocessing.Queue, ..." : the part after " - ".
    first = " ".join(head).split(" - ", 1)
    summary_lines = []
    rest = head[:]
    # The summary is the first sentence after the dash.
    joined = " ".join(l.strip() for l in head)
    after = joined.split(" - ", 1)[1] if " - " in joined else joined
    summary = re.split(r"(?<=[.:])\s", after, 1)[0].rstrip(".:")
    # Description: the opening comment without its first line's "name - ".
    rest[0] = re.sub(r"^\S+ - ", "", rest[0])
    out = []
    ver = version()
    out.append('.TH %s 3 "libconc %s" "libconc" "libconc manual"'
               % (page.upper(), ver))
    out.append(".SH NAME")
    out.append("%s \\- %s" % (page, esc(summary)))
    out.append(".SH SYNOPSIS")
    out.append(".nf")
    out.append(".B #include <conc.h>")
    funcs = []
    decls = []
    types = []
    entries = []
    for comment, code in [(None, pairs[0][1])] + pairs[1:]:
        c = clean_code(code)
        names = functions_in(code)
        funcs.extend(names)
        for m in re.finditer(r"CONC_API[^;]*;", code, re.S):
            decls.append(re.sub(r"\s+", " ", m.group(0)
                                .replace("CONC_API ", "")).strip())
        if re.search(r"\btypedef\b|#define\s+CONC_", code) and not names:
            defines = re.findall(r"#define\s+(CONC_\w+)[^\n]*", code)
            types.append((comment, c, defines, code))
        entries.append((comment, names, c))
    for d in decls:
        out.append(esc(d))
    out.append(".fi")
    out.append(".SH DESCRIPTION")
    out.extend(paragraphs(rest))
    out.append(".SH FUNCTIONS")
    for comment, names, c in entries:
        if comment is None:
            continue
        lines = comment_lines(comment)
        if not lines:
            continue
        section = re.match(r"^-+ (.*?) -+$", lines[0].strip())
        if section:
            out.append(".SS %s" % esc(section.group(1)))
            if len(lines) > 1:
                out.append(".PP")
                out.extend(paragraphs(lines[1:]))
            continue
        if names:
            out.append(".TP")
            out.append(".B %s" % ", ".join(dict.fromkeys(names)))
            out.extend(paragraphs(lines))
        elif not re.search(r"\btypedef\b|#define", c):
            out.append(".PP")
            out.extend(paragraphs(lines))
    if types:
        out.append(".SH TYPES AND CONSTANTS")
        for comment, c, defines, code in types:
            if comment is not None:
                lines = comment_lines(comment)
                if lines and not re.match(r"^-+ .* -+$", lines[0].strip()):
                    out.append(".PP")
                    out.extend(paragraphs(lines))
            if "#define CONC_ERRORS" in code:
                out.append(".PP")
                out.append(".nf")
                for name, value, text in re.findall(
                        r'X\((\w+), ([-\w]+), "([^"]*)"\)', code):
                    out.append(esc("CONC_%-12s %-12s %s" % (name, value, text)))
                out.append(".fi")
                continue
            shown = "\n".join(l for l in c.split("\n")
                              if not l.lstrip().startswith("X(") and
                              "CONC_ERRORS" not in l)
            for d in re.findall(r"#define\s+CONC_\w+.*(?:\\\n.*)*", code):
                dname = d.split()[1].split("(")[0]
                if dname.endswith("_H") or dname == "CONC_API" or \
                        dname.startswith("CONC__"):
                    continue
                shown = (shown + "\n" + d).strip("\n")
            if shown.strip():
                out.append(".PP")
                out.append(".nf")
                out.extend(esc(l) for l in shown.split("\n"))
                out.append(".fi")
    out.append(".SH SEE ALSO")
    others = [p for _, p, _ in PAGES if p != page]
    out.append(",\n".join(".BR %s (3)" % p for p in others))
    return "\n".join(out) + "\n", list(dict.fromkeys(funcs))


def build(dest):
    os.makedirs(dest, exist_ok=True)
    index = []
    for hname, page, title in PAGES:
        text, funcs = make_page(hname, page, title)
        with open(os.path.join(dest, page + ".3"), "w") as f:
            f.write(text)
        for fn in funcs:
            if fn != page:
                index.append("%s %s" % (fn, page))
    with open(os.path.join(dest, "index.txt"), "w") as f:
        f.write("\n".join(sorted(index)) + "\n")
    return index


def all_api_functions():
    found = set()
    for name in os.listdir(INCLUDE):
        if name.endswith(".h"):
            found.update(API_RE.findall(header_text(name)))
    found.update(API_RE.findall(header_text("version.h")))
    return found


def check():
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        index = build(tmp)
        for name in sorted(os.listdir(tmp)):
            mine = os.path.join(MAN, name)
            want = open(os.path.join(tmp, name)).read()
            have = open(mine).read() if os.path.exists(mine) else None
            if have != want:
                print("man/%s is not what the headers make: run "
                      "scripts/man.py" % name)
                bad = 1
        paged = {line.split()[0] for line in index} | \
                {p for _, p, _ in PAGES}
        for fn in sorted(all_api_functions() - paged):
            print("%s has no man page: its header is not in scripts/man.py's "
                  "PAGES" % fn)
            bad = 1
        for _, page, _ in PAGES:
            r = subprocess.run(["groff", "-man", "-ww", "-z",
                                os.path.join(tmp, page + ".3")],
                               capture_output=True, text=True)
            if r.returncode != 0 or r.stderr.strip():
                print("groff warns about %s(3):\n%s" % (page, r.stderr))
                bad = 1
    if not bad:
        print("man pages: %d pages, %d functions, all current and clean"
              % (len(PAGES), len(index)))
    return bad


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        sys.exit(check())
    build(MAN)
    print("wrote man/ from include/")
