#!/usr/bin/env python3
"""Module-level import cycles inside one crate (issue 12: none in crates/bt).

    python3 tools/module_cycles.py crates/bt/src
        Scans the sources: every `crate::`/`super::`/`self::` path and every
        `child::` path of a declared submodule, in code (comments stripped),
        goes to the longest module prefix that is a module of the crate, and
        through `pub use child::Name` re-exports to the module that defines
        the name. An inline `#[cfg(test)] mod tests { .. }` is a module of its
        own (`m::tests`), as it is to rustc.

    cargo modules dependencies --lib -p popek-bt --no-externs --no-sysroot \
        | python3 tools/module_cycles.py --dot -
        Collapses cargo-modules' item graph (rust-analyzer's name resolution)
        to modules: each "uses" edge between items becomes one between the
        modules that own them. (`cargo modules dependencies --acyclic` itself
        checks items, and every type with a method is an item-level cycle.)

Prints the strongly connected components of more than one module and exits
1 if there are any."""
import os, re, sys


def sccs(edges):
    idx, low, on, st, out, n = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)

    def sc(v):
        idx[v] = low[v] = n[0]
        n[0] += 1
        st.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in idx:
                sc(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            c = []
            while True:
                w = st.pop()
                on.discard(w)
                c.append(w)
                if w == v:
                    break
            out.append(c)

    for v in sorted(edges):
        if v not in idx:
            sc(v)
    return [c for c in out if len(c) > 1]


def from_dot(text):
    mods = set(re.findall(r'^\s*"([^"]+)" \[label="[^"|]*(?:mod|crate)\|', text, re.M))

    def owner(p):
        parts = p.split('::')
        for k in range(len(parts), 0, -1):
            c = '::'.join(parts[:k])
            if c in mods:
                return c
        return p

    edges = {m: set() for m in mods}
    for a, b in re.findall(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"', text, re.M):
        ma, mb = owner(a), owner(b)
        if ma != mb and ma in mods and mb in mods:
            edges[ma].add(mb)
    return edges


def strip(src):
    src = re.sub(r'/\*.*?\*/', '', src, flags=re.S)
    return '\n'.join(l.split('//')[0] for l in src.splitlines())


def from_sources(root):
    mods, srcs = {}, {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith('.rs'):
                continue
            p = os.path.relpath(os.path.join(d, f), root)[:-3].split(os.sep)
            if p[-1] in ('mod', 'lib', 'main'):
                p = p[:-1]
            src = strip(open(os.path.join(d, f)).read())
            at = re.search(r'#\[cfg\(test\)\]\s*mod tests\s*\{', src)
            if at:
                mods[tuple(p) + ('tests',)] = True
                srcs[tuple(p) + ('tests',)] = src[at.end():]
                src = src[:at.start()]
            mods[tuple(p)] = True
            srcs[tuple(p)] = src
    reexport = {}
    for m, src in srcs.items():
        for path, names in re.findall(r'pub use (\w+(?:::\w+)*)::\{([^}]*)\}', src):
            for n in re.findall(r'\w+', names):
                reexport[(m, n)] = path
        for path, n in re.findall(r'pub use (\w+(?:::\w+)*)::(\w+);', src):
            reexport[(m, n)] = path
    edges = {m: set() for m in mods}
    for m, src in srcs.items():
        children = set(re.findall(r'\bmod\s+(\w+)\s*;', src))
        paths = re.findall(r'\b((?:crate|super|self)(?:::\w+)+)', src)
        for c in children:
            paths += ['self::' + p for p in re.findall(r'\b(' + c + r'(?:::\w+)+)', src)]
        for p in paths:
            parts = p.split('::')
            base = list(m)
            if parts[0] == 'crate':
                base = []
            elif parts[0] == 'super':
                while parts and parts[0] == 'super':
                    base = base[:-1]
                    parts = parts[1:]
                parts = ['super'] + parts
            rest = parts[1:]
            best = None
            for k in range(len(rest), -1, -1):
                cand = tuple(base + rest[:k])
                if cand in mods:
                    best = cand
                    if k < len(rest) and (cand, rest[k]) in reexport:
                        child = cand + tuple(reexport[(cand, rest[k])].split('::'))
                        if child in mods:
                            best = child
                    break
            if best is not None and best != m:
                edges[m].add(best)
    return {'::'.join(('crate',) + m): {'::'.join(('crate',) + w) for w in e} for m, e in edges.items()}


def main():
    if sys.argv[1:2] == ['--dot']:
        name = sys.argv[2] if len(sys.argv) > 2 else '-'
        edges = from_dot(sys.stdin.read() if name == '-' else open(name).read())
    else:
        edges = from_sources(sys.argv[1] if len(sys.argv) > 1 else 'crates/bt/src')
    cycles = sccs(edges)
    n_edges = sum(len(e) for e in edges.values())
    print(f'{len(edges)} modules, {n_edges} module-level use edges')
    if not cycles:
        print('no import cycle between modules')
    for c in cycles:
        print(f'cycle of {len(c)} modules:')
        for m in sorted(c):
            print(f'  {m:32} -> ' + ', '.join(sorted(w for w in edges[m] if w in c)))
    sys.exit(1 if cycles else 0)


if __name__ == '__main__':
    main()
