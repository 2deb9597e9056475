#!/bin/bash
# Prepares the independent Diameter peers used by the interop tests.
#
# usage: setup.sh WORKDIR
#
# Builds freeDiameter's test_app extension (Debian does not ship it) into
# WORKDIR/test_app.fdx from the Debian source package of freediameter 1.2.1,
# and compiles the Erlang credit-control dictionary into WORKDIR. Needs root
# only for apt-get. Packages: freediameter freediameter-extensions
# libfreediameter-dev erlang-diameter erlang-dev bison flex gcc dpkg-dev.
# Set SHARDGATE_APT=0 to skip apt-get when the packages are already present.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:?usage: setup.sh WORKDIR}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

if [[ ${SHARDGATE_APT:-1} == 1 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq freediameter freediameter-extensions libfreediameter-dev \
    erlang-diameter erlang-dev bison flex gcc dpkg-dev >/dev/null
fi

# The source package comes from the deb-src twin of the first configured
# mirror, fetched with a private apt state so the system lists stay untouched.
SRC=$WORK/src/freediameter-1.2.1
if [[ ! -d $SRC/extensions/test_app ]]; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
  echo "deb-src $mirror bookworm main" > "$WORK/apt/sources.list"
  opts=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache"
        -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
  apt-get "${opts[@]}" update -qq
  (cd "$WORK/src" && apt-get "${opts[@]}" source freediameter >/dev/null)
fi

# test_app: the same sources its CMakeLists.txt lists, linked against the
# installed libfdcore/libfdproto.
TA=$SRC/extensions/test_app
if [[ ! -f $WORK/test_app.fdx ]]; then
  cd "$WORK"
  bison --name-prefix=ta_conf --defines --output-file=ta_conf.tab.c "$TA/ta_conf.y"
  flex -Pta_conf -olex.ta_conf.c "$TA/ta_conf.l"
  gcc -shared -fPIC -O2 -D_GNU_SOURCE -I"$TA" -I. -I/usr/include/freeDiameter \
    -o test_app.fdx "$TA"/test_app.c "$TA"/ta_dict.c "$TA"/ta_cli.c "$TA"/ta_bench.c \
    "$TA"/ta_serv.c lex.ta_conf.c ta_conf.tab.c -lfdcore -lfdproto -lpthread
fi

# Erlang/OTP diameter: the RFC 4006 dictionary module the CCR client loads.
cp "$HERE"/erl/cc_min.dia "$HERE"/erl/ccr_client.escript "$WORK"/
(cd "$WORK" && /usr/lib/erlang/lib/diameter-*/bin/diameterc -o . cc_min.dia && erlc cc_min.erl)
echo "diameter peers ready in $WORK"
