#!/usr/bin/env bash
# Builds the browser demo: the kiln-web crate for wasm32-unknown-unknown
# (release), then wasm-bindgen's JS glue into web/www/pkg. Serve web/www
# with any static file server afterwards, e.g.
#   python3 -m http.server -d web/www 8080
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli 0.2.130
# (see README.md, "Browser"). On machines where rustup cannot download the
# target, `source ../shared/tools/wasm-env.sh` first: it sets WASM_BUILD_STD
# to build std from source; elsewhere WASM_BUILD_STD is empty.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile="${KILN_WEB_PROFILE:-release}"
flag="--release"
[ "$profile" = release ] || flag="--profile=$profile"

need=0.2.130
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" || true
if [ "$have" != "$need" ]; then
  echo "build.sh: wasm-bindgen $need is needed (found: ${have:-none});" \
       "cargo install wasm-bindgen-cli --version $need" >&2
  exit 1
fi

# shellcheck disable=SC2086  # WASM_BUILD_STD is a flag or empty
cargo build $flag --target wasm32-unknown-unknown ${WASM_BUILD_STD:-} -p kiln-web
wasm-bindgen --target web --no-typescript --out-dir web/www/pkg \
  "target/wasm32-unknown-unknown/$profile/kiln_web.wasm"
ls -l web/www/pkg
echo "build.sh: done; serve with: python3 -m http.server -d web/www 8080"
