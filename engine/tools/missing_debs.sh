#!/bin/sh
# The Debian packages the build needs and this machine lacks, one a line (Makefile: the check before the
# build, and `make deps`). Arguments: the C compiler, the pkg-config command.
cc=${1:-cc}
pkg_config=${2:-pkg-config}
# pkg-config name:Debian package of each library the build links
libs="lua5.4:liblua5.4-dev libuv:libuv1-dev libarchive:libarchive-dev libcrypto:libssl-dev libssl:libssl-dev
  libedit:libedit-dev libcurl:libcurl4-openssl-dev libh2o:libh2o-dev"
{
  if ! command -v "$cc" >/dev/null 2>&1; then
    echo build-essential
  elif [ "$("$cc" -print-file-name=liblua5.4-cjson.so)" = liblua5.4-cjson.so ]; then
    echo lua-cjson-dev
  fi
  have_pkg_config=1
  command -v "$pkg_config" >/dev/null 2>&1 || { echo pkgconf; have_pkg_config=; }
  for pair in $libs; do
    if [ -z "$have_pkg_config" ] || ! "$pkg_config" --exists "${pair%%:*}" 2>/dev/null; then echo "${pair#*:}"; fi
  done
} | sort -u
