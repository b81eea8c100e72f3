#!/usr/bin/env bash
# Builds the Debian packages offgrid-spoold and offgrid-ledgerd with cargo-deb
# (cargo install cargo-deb) into $CARGO_TARGET_DIR/debian/. docs/operations.md
# says how to install, upgrade and remove them.
#
# 1. builds spoold, spoolctl and ledgerd (profile $OFFGRID_DEB_PROFILE,
#    default release);
# 2. makes the generated assets in target/deb-assets/: man pages and shell
#    completions from the binaries themselves, and the units of systemd/ with
#    the binaries in /usr/bin;
# 3. runs cargo deb for both packages without building again.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${OFFGRID_DEB_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-target}"
case "$profile" in
  dev) out="$target/debug" ;;
  *) out="$target/$profile" ;;
esac

# OFFGRID_DEB_NO_BUILD=1: the binaries are built already (tests/it/deb.rs runs
# inside cargo test, which holds the build directory's lock).
if [ -z "${OFFGRID_DEB_NO_BUILD:-}" ]; then
  cargo build --locked --profile "$profile" -p spoold -p spoolctl -p ledger --bins
fi

# Paths in daemon/Cargo.toml and crates/ledger/Cargo.toml point here.
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions" "$assets/units"
for bin in spoold ledgerd spoolctl; do
  if [ "$bin" = spoolctl ]; then man=(man); comp=(completions); else man=(--man); comp=(--completions); fi
  "$out/$bin" "${man[@]}" | gzip -9n > "$assets/man/$bin.1.gz"
  "$out/$bin" "${comp[@]}" bash > "$assets/completions/$bin.bash"
  "$out/$bin" "${comp[@]}" zsh > "$assets/completions/_$bin"
  "$out/$bin" "${comp[@]}" fish > "$assets/completions/$bin.fish"
done
sed -e 's#/usr/local/bin/#/usr/bin/#g' -e 's#/usr/share/doc/offgrid/#/usr/share/doc/offgrid-spoold/#g' \
  systemd/spoold.service > "$assets/units/spoold.service"
sed -e 's#/usr/local/bin/#/usr/bin/#g' -e 's#/usr/share/doc/offgrid/#/usr/share/doc/offgrid-ledgerd/#g' \
  systemd/ledgerd.service > "$assets/units/ledgerd.service"

for pkg in spoold ledger; do
  cargo deb --no-build --profile "$profile" -p "$pkg" "$@"
done
ls -l "$target/debian/"*.deb
