# Reads the static part of a cloud-init version 2 network config (the NoCloud "network-config"
# file) in YAML block style, lists indented or not. Prints one line per ethernet with an address:
#   id mac address/prefix gateway nameserver,nameserver
# with "-" for a missing field. Ethernets on DHCP (no "addresses") are left out.
# Usage: awk -f netcfg.awk network-config

function unquote(v) {
    sub(/^[ \t]+/, "", v)
    sub(/[ \t]+#.*$/, "", v)
    sub(/[ \t]+$/, "", v)
    if (v ~ /^".*"$/ || v ~ /^'.*'$/) v = substr(v, 2, length(v) - 2)
    return v
}

function flush() {
    if (id != "" && addr != "")
        print id, (mac == "" ? "-" : mac), addr, (gw == "" ? "-" : gw), (dns == "" ? "-" : dns)
    id = mac = addr = gw = dns = ""
}

# The key owning a line at indent i: the deepest key at indent <= i (block lists sit at their key's
# indent in PyYAML's style, two deeper in others).
function owner(i,    j) {
    for (j = i; j >= 0; j--) if (j in path) { oi = j; return path[j] }
    oi = -1
    return ""
}

function add(value) {
    if (eth == "") return
    o = owner(indent)
    if (o == "addresses" && oi == eth + 4 && addr == "") addr = value
    else if (o == "addresses" && (oi - 2) in path && path[oi - 2] == "nameservers")
        dns = (dns == "" ? value : dns "," value)
}

{ sub(/\r$/, "") }
/^[ \t]*(#.*)?$/ { next }

{
    match($0, /^ */)
    indent = RLENGTH
    line = substr($0, indent + 1)
    item = 0
    if (line ~ /^- /) { # a list item; "- key: value" opens a mapping two columns deeper
        item = 1
        line = substr(line, 3)
        add_value = line
        if (line !~ /^[A-Za-z0-9_-]+:( |$)/) { add(unquote(add_value)); next }
        indent += 2
    }
    if (!match(line, /^[A-Za-z0-9_.-]+:/)) next
    key = substr(line, 1, RLENGTH - 1)
    value = unquote(substr(line, RLENGTH + 1))
    for (j in path) if (j + 0 >= indent) delete path[j]
    path[indent] = key
}

key == "ethernets" && eth == "" { flush(); eth = indent; next }
eth == "" { next }
indent <= eth { flush(); eth = ""; next }
indent == eth + 2 { flush(); id = key; next }
key == "macaddress" && (indent - 2) in path && path[indent - 2] == "match" { mac = tolower(value); next }
(key == "via" || key == "gateway4") && gw == "" { gw = value; next }
key == "addresses" && value ~ /^\[/ {
    sub(/^\[/, "", value)
    sub(/\][ \t]*$/, "", value)
    n = split(value, items, ",")
    for (k = 1; k <= n; k++) add(unquote(items[k]))
    next
}

END { flush() }
