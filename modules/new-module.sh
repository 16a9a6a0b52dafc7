#!/bin/sh
# `make new-module NAME=geo_block`: everything a new product module needs,
# from the templates in modules/template/: the crate (typed configuration,
# `impl Module`, `Configured`, unit and property tests, a criterion bench),
# its workspace, engine and registry entries, the Lua twin, and its parity
# test through nginx. Then edit the configuration struct, `on_request` and
# the Lua twin, and `make test` runs the parity.
set -eu
name=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
case $name in
    ""|*[!a-z0-9_]*|[!a-z]*) echo "new-module: NAME is a lower-case identifier (letters, digits, _), e.g. NAME=geo_block" >&2; exit 1 ;;
esac
crate=$(echo "$name" | tr _ -)
# A name already taken: a module, one of graft's own crates, a test file.
if [ -e "$root/modules/$name" ] || [ "$name" = template ] ||
    grep -q "^graft-$crate = " "$root/Cargo.toml" ||
    [ -e "$root/lua/graft/legacy/$name.lua" ] || [ -e "$root/tests/tests/parity_$name.rs" ]; then
    echo "new-module: the name $name is taken (modules/, Cargo.toml, lua/graft/legacy/ or tests/tests/)" >&2
    exit 1
fi
type=$(echo "$name" | awk -F_ '{ for (i = 1; i <= NF; i++) printf "%s%s", toupper(substr($i, 1, 1)), substr($i, 2) }')
fill() {
    sed -e "s/__NAME__/$name/g" -e "s/__CRATE__/$crate/g" -e "s/__TYPE__/$type/g" "$1" > "$2"
}
t=$root/modules/template
m=$root/modules/$name
mkdir -p "$m/src" "$m/benches"
fill "$t/Cargo.toml.in" "$m/Cargo.toml"
fill "$t/src/lib.rs.in" "$m/src/lib.rs"
fill "$t/src/tests.rs.in" "$m/src/tests.rs"
fill "$t/benches/bench.rs.in" "$m/benches/$name.rs"
fill "$t/legacy.lua.in" "$root/lua/graft/legacy/$name.lua"
fill "$t/parity.rs.in" "$root/tests/tests/parity_$name.rs"
# The workspace, the engine and the registry.
sed -i -e "s|^    \"shim/engine\",|    \"modules/$name\",\n    \"shim/engine\",|" \
    -e "s|^graft-contract = { path = \"modules/contract\" }|&\ngraft-$crate = { path = \"modules/$name\" }|" "$root/Cargo.toml"
sed -i "s|^graft-contract.workspace = true|&\ngraft-$crate.workspace = true|" "$root/shim/engine/Cargo.toml"
sed -i "s|^    // New modules above this line (make new-module).|    \&graft_$name::FACTORY,\n&|" "$root/shim/engine/src/registry.rs"
grep -q "^    \"modules/$name\",$" "$root/Cargo.toml" &&
    grep -q "graft-$crate.workspace" "$root/shim/engine/Cargo.toml" &&
    grep -q "graft_$name::FACTORY" "$root/shim/engine/src/registry.rs" ||
    { echo "new-module: could not register $name (Cargo.toml, shim/engine/Cargo.toml, registry.rs)" >&2; exit 1; }
echo "new-module: modules/$name, lua/graft/legacy/$name.lua, tests/tests/parity_$name.rs written;"
echo "  registered in Cargo.toml, shim/engine/Cargo.toml and shim/engine/src/registry.rs."
echo "  Edit the configuration and on_request in modules/$name/src/lib.rs and the Lua twin; make test runs the parity."
