#!/usr/bin/env bash
# Refresh the dashboard's vendored browser libraries from the npm registry.
#
# kasp serves these files itself (no CDN, no Node.js at run time): this script is
# only for a maintainer bumping a version. It needs npm; edit PACKAGES, run it,
# review the diff of service/ui/static/vendor/, and commit.
set -euo pipefail

# name@version  files-to-copy (paths inside the npm tarball's package/ folder)
PACKAGES=(
  "htmx.org@2.0.11 dist/htmx.min.js LICENSE"
  "htmx-ext-sse@2.2.4 dist/sse.min.js LICENSE"
  "uplot@1.6.32 dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE"
)

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/service/ui/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rm -rf "$dest"
mkdir -p "$dest"
: > "$dest/VERSIONS"
for entry in "${PACKAGES[@]}"; do
  read -r spec files <<<"$entry"
  name="${spec%@*}"
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  tarball="$(ls "$work"/*.tgz)"
  mkdir -p "$work/x" "$dest/$name"
  tar -xzf "$tarball" -C "$work/x"
  for f in $files; do
    cp "$work/x/package/$f" "$dest/$name/$(basename "$f")"
  done
  echo "$spec $(sha256sum "$tarball" | cut -d' ' -f1)" >> "$dest/VERSIONS"
  rm -rf "$work/x" "$tarball"
done
echo "vendored into $dest:"
cat "$dest/VERSIONS"
