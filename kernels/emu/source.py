"""Source handling for the emulator: the rewrites of ``__shared__``, and kernel discovery.

``extern __shared__ T name[];`` (dynamic shared memory) cannot be a macro expansion
(``extern static`` is not C++), so it is rewritten into a pointer to the per-launch
buffer. A static ``__shared__ T name[N];`` in a function (``static __shared__`` too, as in
NVIDIA's block-reduce idiom) keeps its declaration and gains
a note of its size (a kernel over a GPU's 48 KB fails); under memcheck it becomes a reference to
a guarded region instead (``static T (&name)[N] = ...``, kernels/emu/check.cpp), so
``sizeof``, indexing and decay to a pointer are unchanged. Rewrites stay on their
line, so g++'s line numbers stay those of the ``.cu`` file; comments and string
literals are left alone.

Kernels are found in the *preprocessed* source (so macros and ``#if`` are honoured):
every ``extern "C"`` kernel that is not a template gets an entry in the launch table;
templates and C++-linkage kernels are reached through ``name_expressions``, as in CuPy.
"""

import re

_EXTERN_SHARED = re.compile(
    r"\bextern\s+__shared__\b(?P<type>[^;{}]*?)\b(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*;")
_ATTRIBUTE = re.compile(r"\b(?:__align__|__attribute__)\s*\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)")

KERNEL_MARKER = "__emu_kernel_marker__"  # what cuda_emu.h turns __global__ into when parsing
_TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|[A-Za-z_]\w*|::|\S')


_STATIC_SHARED = re.compile(r"(?<![\w])__shared__\b(?P<decl>[^;{}]*);")
_DECLARATOR = re.compile(r"^(?P<type>.*?)\b(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\]\s*)*)$", re.S)
_MASKED = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


# ``static __shared__`` (the block-reduce idiom of NVIDIA's samples, in a __device__
# function) or ``__shared__ static``: __shared__ already means static here.
_STATIC_WORD = re.compile(r"\bstatic(?=\s+__shared__\b)|(?<=__shared__)(\s+)static\b")


def _mask(text):
    """``text`` with comments and string literals blanked (same length, same lines)."""
    return _MASKED.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def rewrite_shared(text, memcheck=False):
    """The source with its ``__shared__`` declarations rewritten for the emulator."""
    masked = _mask(text)
    for m in reversed(list(_STATIC_WORD.finditer(masked))):  # same length: positions stay valid
        text = text[:m.end() - 6] + "      " + text[m.end():]
    masked = _mask(text)
    edits = []  # (start, end, replacement), found in the masked text, applied to the original
    for m in _EXTERN_SHARED.finditer(masked):
        ctype = " ".join(_ATTRIBUTE.sub(" ", m["type"]).split())
        buffer = f'__emu_check_dynamic_smem("{m["name"]}")' if memcheck else "__emu_dynamic_smem"
        newlines = "\n" * m.group(0).count("\n")
        edits.append((m.start(), m.end(),
                      f"{ctype} *const {m['name']} = reinterpret_cast<{ctype} *>({buffer});{newlines}"))
    taken = [(a, b) for a, b, _ in edits]
    for m in _STATIC_SHARED.finditer(masked):
        if any(a <= m.start() < b for a, b in taken):
            continue
        line = text.count("\n", 0, m.start()) + 1
        in_function = _in_function(masked, m.start())
        if not (memcheck or in_function):
            continue  # file scope: not a kernel's own, and a note would be a statement there
        replacement = _static_shared(m.group(0), m["decl"], line, memcheck)
        if replacement is not None:
            edits.append((m.start(), m.end(), replacement))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _static_shared(original, decl, line, memcheck):
    """One declaration ``__shared__ T a[N], b;`` rewritten; None leaves it as it is."""
    newlines = "\n" * original.count("\n")
    parts = _split_top_level(" ".join(_ATTRIBUTE.sub(" ", decl).split()))
    first = _DECLARATOR.match(parts[0])
    if first is None or not first["type"].strip():
        return None
    ctype = first["type"].strip()
    out = [] if memcheck else [original.replace("\n", " ")]
    for k, part in enumerate(parts):
        d = _DECLARATOR.match(part) if k == 0 else _DECLARATOR.match(f"{ctype} {part}")
        if d is None or "(" in d["dims"] or "=" in part:
            return None
        name, dims = d["name"], d["dims"].strip()
        t = f"__emu_shared_{name}_{line}_t"
        if memcheck:
            out.append(f"typedef {ctype} {t}{dims}; static {t}& {name} = *static_cast<{t}*>("
                       f'__emu_check_shared(sizeof({t}), "{name}", __FILE__, __LINE__));')
        else:
            out.append(f"__EMU_NOTE_SHARED({name});")
    return " ".join(out) + newlines


_BLOCK = re.compile(r'\bnamespace\b[^{};]*\{|\bextern\s+"C"\s*\{|[{}]')


def _in_function(masked, pos):
    """Whether ``pos`` lies in a function body (not at namespace or extern "C" scope)."""
    stack = []
    for m in _BLOCK.finditer(masked, 0, pos):
        if m.group(0) == "}":
            if stack:
                stack.pop()
        else:
            stack.append(m.group(0) == "{")
    return bool(stack) and stack[-1]


def _split_top_level(decl):
    """``float a[N], b[M]`` -> [``float a[N]``, ``b[M]``] (commas inside brackets stay)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(decl):
        depth += ch in "([<" and 1 or (-1 if ch in ")]>" else 0)
        if ch == "," and depth == 0:
            parts.append(decl[start:i].strip())
            start = i + 1
    parts.append(decl[start:].strip())
    return parts


def find_kernels(preprocessed):
    """Qualified names of the ``extern "C"`` non-template kernels, in source order.

    A small scanner over tokens: it tracks ``extern "C" {...}`` and namespace blocks,
    and whether the declaration being read started with ``extern "C"`` or ``template``.
    """
    tokens = _TOKEN.findall(preprocessed)
    found = []
    stack = []  # "C" (extern "C" block), ("ns", name), or "other" (class or function body)
    decl_c = decl_template = False
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok == "extern" and i + 1 < n and tokens[i + 1] == '"C"':
            if i + 2 < n and tokens[i + 2] == "{":
                stack.append("C")
                decl_c = decl_template = False
                i += 3
            else:
                decl_c = True
                i += 2
            continue
        if tok == "namespace":
            j, parts = i + 1, []
            while j < n and tokens[j] not in ("{", "=", ";"):
                if tokens[j] != "::" and tokens[j] != "inline":
                    parts.append(tokens[j])
                j += 1
            if j < n and tokens[j] == "{":
                stack.append(("ns", "::".join(parts)))
                decl_c = decl_template = False
                i = j + 1
                continue
        if tok == "template":
            decl_template = True
        elif tok == "{":
            stack.append("other")
            decl_c = decl_template = False
        elif tok == "}":
            if stack:
                stack.pop()
            decl_c = decl_template = False
        elif tok == ";":
            decl_c = decl_template = False
        elif tok == KERNEL_MARKER and "other" not in stack:
            name = _declared_name(tokens, i + 1)
            if name and (decl_c or "C" in stack) and not decl_template:
                scope = [s[1] for s in stack if isinstance(s, tuple) and s[1]]
                qualified = "::".join(scope + [name])
                if all(k[0] != name for k in found):
                    found.append((name, qualified))
        i += 1
    return found


def _declared_name(tokens, i):
    """The identifier just before the parameter list, skipping ``__attribute__((...))``."""
    last = None
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("__attribute__", "__declspec", "alignas"):
            i = _skip_parens(tokens, i + 1)
            continue
        if tok == "(":
            return last
        if tok in (";", "{", "}"):
            return None
        if re.match(r"[A-Za-z_]\w*$", tok):
            last = tok
        i += 1
    return None


def _skip_parens(tokens, i):
    depth = 0
    while i < len(tokens):
        if tokens[i] == "(":
            depth += 1
        elif tokens[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i
