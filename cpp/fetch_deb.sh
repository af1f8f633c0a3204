#!/usr/bin/env bash
# Download one Debian package (without installing it, no root needed) and unpack it into DEST.
# Usage: cpp/fetch_deb.sh SUITE PACKAGE DEST [MEMBER...]
#   e.g. cpp/fetch_deb.sh bookworm googletest .deps/googletest
#        cpp/fetch_deb.sh trixie qemu-user DIR ./usr/bin/qemu-aarch64   (only these files of the package)
# Uses a private source list and lists dir, so the machine's apt state is not touched.
set -euo pipefail
suite=${1:?usage: $0 SUITE PACKAGE DEST}
pkg=${2:?usage: $0 SUITE PACKAGE DEST}
dest=${3:?usage: $0 SUITE PACKAGE DEST}
members=("${@:4}")
if [ -f "$dest/.fetched-$pkg" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb $mirror $suite main" > "$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${opts[@]}" -qq update
(cd "$work" && apt-get "${opts[@]}" -qq download "$pkg")
mkdir -p "$dest"
if [ ${#members[@]} -eq 0 ]; then
  dpkg -x "$work/${pkg}"_*.deb "$dest"
else
  dpkg-deb --fsys-tarfile "$work/${pkg}"_*.deb | tar -x -C "$dest" "${members[@]}"
fi
touch "$dest/.fetched-$pkg"
echo "fetched $(ls "$work/${pkg}"_*.deb | xargs -n1 basename) -> $dest"
