# Reads the small YAML subset of NoCloud seeds: a top-level "key: scalar", or "key:" followed by a
# block list ("  - item") or a flow list ("[a, b]"). Scalars may be plain, 'single' or "double"
# quoted. Usage: awk -v mode=scalar|list -v key=NAME -f seed.awk FILE (prints one value a line).

function unquote(v,    out, i, n, c) {
    sub(/^[ \t]+/, "", v)
    n = length(v)
    out = ""
    if (substr(v, 1, 1) == "\"") {
        for (i = 2; i <= n; i++) {
            c = substr(v, i, 1)
            if (c == "\\") {
                i++
                c = substr(v, i, 1)
                if (c == "n") c = "\n"
                else if (c == "t") c = "\t"
            } else if (c == "\"") {
                return out
            }
            out = out c
        }
        return out
    }
    if (substr(v, 1, 1) == "'") {
        for (i = 2; i <= n; i++) {
            c = substr(v, i, 1)
            if (c == "'") {
                if (substr(v, i + 1, 1) != "'") return out
                i++
            }
            out = out c
        }
        return out
    }
    sub(/[ \t]+#.*$/, "", v)
    sub(/[ \t]+$/, "", v)
    return v
}

function flow_list(v,    n, i, items, item) {
    sub(/^[ \t]*\[/, "", v)
    sub(/\][ \t]*$/, "", v)
    n = split(v, items, ",")
    for (i = 1; i <= n; i++) {
        item = unquote(items[i])
        if (item != "") print item
    }
}

{ sub(/\r$/, "") }

inlist {
    if ($0 ~ /^[ \t]*-([ \t]|$)/) {
        v = $0
        sub(/^[ \t]*-/, "", v)
        v = unquote(v)
        if (v != "") print v
        next
    }
    if ($0 ~ /^[ \t]*(#.*)?$/ || $0 ~ /^[ \t]/) next
    exit
}

index($0, key ":") == 1 {
    rest = substr($0, length(key) + 2)
    if (rest !~ /^([ \t]|$)/) next
    sub(/^[ \t]+/, "", rest)
    if (mode == "list") {
        if (rest == "" || rest ~ /^#/) inlist = 1
        else if (rest ~ /^\[/) { flow_list(rest); exit }
        else { v = unquote(rest); if (v != "") print v; exit }
        next
    }
    print unquote(rest)
    exit
}
