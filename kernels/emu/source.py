"""Source handling for the emulator: the one rewrite g++ needs, and kernel discovery.

``extern __shared__ T name[];`` (dynamic shared memory) cannot be a macro expansion
(``extern static`` is not C++), so it is rewritten into a pointer to the per-launch
buffer, keeping the line count so g++'s line numbers stay those of the ``.cu`` file.

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


def rewrite_extern_shared(text):
    """``extern __shared__ float s[];`` -> ``float *const s = reinterpret_cast<float *>(buffer);``"""
    def pointer(m):
        ctype = " ".join(_ATTRIBUTE.sub(" ", m["type"]).split())
        newlines = "\n" * m.group(0).count("\n")
        return (f"{ctype} *const {m['name']} = "
                f"reinterpret_cast<{ctype} *>(__emu_dynamic_smem);{newlines}")
    return _EXTERN_SHARED.sub(pointer, text)


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
