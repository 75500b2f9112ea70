#!/bin/bash
# util-linux's own regression tests (tests/ts/unshare, nsenter, lsns) with portclone's
# drop-ins in place of util-linux's commands (docs/cli.md).  util-linux is GPL and another
# project's: it is cloned and built outside the checkout, never copied into it.
#
# Run util-linux's own regression tests for unshare / nsenter / lsns against
#   (1) util-linux's unshare+nsenter built from source        -> mode "built"
#   (2) the host's /usr/bin/unshare + /usr/bin/nsenter        -> mode "host"
#   (3) portclone's drop-ins (python -m portclone unshare|nsenter) -> mode "portclone"
# and print a result table.  lsns, lsfd, mount, umount, getino and the test
# helpers always come from the util-linux build; only unshare/nsenter change.
#
# Usage: tools/util_linux_tests.sh [--fresh] [--repeat=N] [--no-extra] [--modes="built host portclone"]
#   --fresh      remove $WORK/util-linux and $WORK/build first (fresh clone + build)
#   --repeat=N   run the portclone mode N times (flakiness check; default 1)
#   --no-extra   only ts/unshare ts/nsenter ts/lsns (default also runs the two
#                other tests that use TS_CMD_UNSHARE: getino/getino, lsfd/mkfds-cdev-tun)
# Env: WORK (default ~/.cache/portclone/util-linux), UL_MIRROR (a util-linux git URL or
#      directory; default GitHub's), UL_COMMIT (default: its HEAD), PORTCLONE_PYTHON (an
#      interpreter that imports this checkout's portclone; default python3 with
#      PYTHONPATH=src)
set -u

CHECKOUT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/portclone/util-linux}
UL_MIRROR=${UL_MIRROR:-https://github.com/util-linux/util-linux}
UL_COMMIT=${UL_COMMIT:-}
PORTCLONE_PYTHON=${PORTCLONE_PYTHON:-python3}
export PYTHONPATH="$CHECKOUT/src${PYTHONPATH:+:$PYTHONPATH}"
SRC=$WORK/util-linux
BUILD=$WORK/build
PCBIN=$WORK/pc-bin
RES=$WORK/results
FRESH=0; REPEAT=1; EXTRA=1; MODES="built host portclone"
NICE="nice -n 10"

for a in "$@"; do
	case "$a" in
	--fresh) FRESH=1 ;;
	--repeat=*) REPEAT=${a#--repeat=} ;;
	--no-extra) EXTRA=0 ;;
	--modes=*) MODES=${a#--modes=} ;;
	-h|--help) sed -n '2,20p' "$0"; exit 0 ;;
	*) echo "unknown option $a" >&2; exit 2 ;;
	esac
done

log() { echo "### $*" >&2; }

# ---------------------------------------------------------------- 0. tools
need=()
for p in meson:meson ninja:ninja-build gcc:gcc pkg-config:pkg-config bison:bison \
	 flex:flex ip:iproute2 mkfifo:coreutils; do
	command -v "${p%%:*}" >/dev/null 2>&1 || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	log "apt-get install ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" || exit 1
fi

# ---------------------------------------------------------------- 1. clone
if [ $FRESH = 1 ]; then rm -rf "$SRC" "$BUILD"; fi
if [ ! -d "$SRC/.git" ]; then
	log "cloning $UL_MIRROR -> $SRC"
	git clone -q "$UL_MIRROR" "$SRC" || exit 1
fi
[ -n "$UL_COMMIT" ] || UL_COMMIT=$(git -C "$SRC" rev-parse origin/HEAD 2>/dev/null || git -C "$SRC" rev-parse HEAD)
git -C "$SRC" checkout -q "$UL_COMMIT" || exit 1
UL_COMMIT=$(git -C "$SRC" rev-parse HEAD)
log "util-linux commit $UL_COMMIT ($(git -C "$SRC" describe --tags --always 2>/dev/null))"

# ---------------------------------------------------------------- 2. build (minimal)
if [ ! -f "$BUILD/build.ninja" ]; then
	log "meson setup $BUILD"
	$NICE meson setup "$BUILD" "$SRC" -Dbuild-python=disabled -Dprogram-tests=true \
		> "$WORK/meson-setup.log" 2>&1 || { tail -30 "$WORK/meson-setup.log"; exit 1; }
fi
TARGETS="unshare nsenter lsns lsfd mount umount getino test_sigreceive test_strerror test_mkfds test_sysinfo"
log "ninja -j2 $TARGETS"
$NICE ninja -C "$BUILD" -j2 $TARGETS > "$WORK/ninja.log" 2>&1 || { tail -30 "$WORK/ninja.log"; exit 1; }

# ---------------------------------------------------------------- 3. portclone wrappers
mkdir -p "$PCBIN"
for t in unshare nsenter; do
	cat > "$PCBIN/$t" <<EOF
#!/bin/sh
# portclone's drop-in, for tools/util_linux_tests.sh
[ -n "\$UL_RUN_WRAPLOG" ] && printf '%s %s\n' "$t" "\$*" >> "\$UL_RUN_WRAPLOG"
exec "\${PORTCLONE_PYTHON:-$PORTCLONE_PYTHON}" -m portclone $t "\$@"
EOF
	chmod +x "$PCBIN/$t"
done
if ! (cd /tmp && "$PORTCLONE_PYTHON" -m portclone unshare --help >/dev/null 2>&1 \
      && "$PORTCLONE_PYTHON" -m portclone nsenter --help >/dev/null 2>&1); then
	echo "portclone drop-ins do not start; try:" >&2
	echo "  cd $CHECKOUT && $PORTCLONE_PYTHON setup.py -q build_ext --inplace" >&2
	exit 1
fi
PC_REV=$(git -C "$CHECKOUT" rev-parse HEAD 2>/dev/null)
PC_DIRTY=$(git -C "$CHECKOUT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
log "portclone $CHECKOUT HEAD $PC_REV (modified tracked files: $PC_DIRTY)"

# ---------------------------------------------------------------- 4. tests
TESTS=()
for c in unshare nsenter lsns; do
	for f in "$SRC"/tests/ts/$c/*; do
		[ -f "$f" ] && [ -x "$f" ] && TESTS+=("$c/$(basename "$f")")
	done
done
[ $EXTRA = 1 ] && TESTS+=(getino/getino lsfd/mkfds-cdev-tun)

run_mode() {   # $1 = mode, $2 = result dir
	local mode=$1 out=$2 t
	local -a envs=(TS_CMD_RUNUSER=/usr/sbin/runuser)  # runuser is not built (no PAM headers); getino needs it
	case $mode in
	built)     envs+=(TS_CMD_UNSHARE="$BUILD/unshare" TS_CMD_NSENTER="$BUILD/nsenter") ;;
	host)      envs+=(TS_CMD_UNSHARE=/usr/bin/unshare TS_CMD_NSENTER=/usr/bin/nsenter) ;;
	portclone) envs+=(TS_CMD_UNSHARE="$PCBIN/unshare" TS_CMD_NSENTER="$PCBIN/nsenter"
			  UL_RUN_WRAPLOG="$out/wrapper-invocations.log" PORTCLONE_PYTHON="$PORTCLONE_PYTHON") ;;
	esac
	rm -rf "$out"; mkdir -p "$out"
	printf '%s\n' "${envs[@]}" > "$out/env"
	for t in "${TESTS[@]}"; do
		log "[$mode] $t"
		( cd "$SRC" && env "${envs[@]}" $NICE tests/run.sh --srcdir="$SRC" --builddir="$BUILD" \
			--parallel=1 --parsable --show-diff "$t" ) > "$out/${t//\//_}.log" 2>&1
		# keep the test's raw output/diff files for later inspection
		mkdir -p "$out/files/output/${t%/*}" "$out/files/diff/${t%/*}"
		cp -a "$BUILD"/tests/output/"$t"* "$out/files/output/${t%/*}/" 2>/dev/null
		cp -a "$BUILD"/tests/diff/"$t"* "$out/files/diff/${t%/*}/" 2>/dev/null
	done
}

MODE_DIRS=()
for m in $MODES; do
	if [ "$m" = portclone ] && [ "$REPEAT" -gt 1 ]; then
		for i in $(seq 1 "$REPEAT"); do run_mode portclone "$RES/portclone-$i"; MODE_DIRS+=("portclone-$i"); done
	else
		run_mode "$m" "$RES/$m"; MODE_DIRS+=("$m")
	fi
done

# ---------------------------------------------------------------- 5. table
{
echo "util-linux commit: $UL_COMMIT"
echo "portclone: $CHECKOUT HEAD $PC_REV, $PC_DIRTY modified tracked file(s); python $PORTCLONE_PYTHON"
echo "host tools: $(/usr/bin/unshare --version 2>&1)"
echo
/usr/bin/python3 - "$RES" "${MODE_DIRS[@]}" -- "${TESTS[@]}" <<'PY'
import re, sys, os
res = sys.argv[1]; i = sys.argv.index('--')
modes, tests = sys.argv[2:i], sys.argv[i+1:]
line_re = re.compile(r'^\s*\S+: (.*?)\s*\.\.\. (OK|FAILED|SKIPPED)(.*)$')
sub_re = re.compile(r': \[(\d+)\] (\S+)$')
rows = {}   # key -> {mode: result}
order = []
for t in tests:
    for m in modes:
        p = os.path.join(res, m, t.replace('/', '_') + '.log')
        try: text = open(p, errors='replace').read().splitlines()
        except OSError: text = []
        top = None
        for l in text:
            mm = line_re.match(l)
            if not mm: continue
            desc, st, rest = mm.groups()
            rest = rest.strip()
            sm = sub_re.search(desc)
            if sm:
                key = f'{t} [{sm.group(1)}] {sm.group(2)}'
                val = st if st != 'SKIPPED' else f'SKIPPED {rest}'
            else:
                key = t
                if st == 'SKIPPED': val = f'SKIPPED {rest}'
                elif st == 'FAILED': val = 'FAILED'
                else: val = 'OK'
            if key not in rows: rows[key] = {}; order.append(key)
            rows[key][m] = val
        if t not in rows: rows[t] = {}; order.append(t)
        rows[t].setdefault(m, 'NO RESULT (see log)')
# subtests first-appearance order puts them before their parent; reorder: parent then subtests
final = []
for t in tests:
    final.append(t)
    final += [k for k in order if k.startswith(t + ' [')]
w0 = max(len(k) for k in final)
ws = [max([len(m)] + [len(rows[k].get(m, '')) for k in final]) for m in modes]
hdr = 'test'.ljust(w0) + ' | ' + ' | '.join(m.ljust(w) for m, w in zip(modes, ws))
print(hdr); print('-' * len(hdr))
for k in final:
    print(k.ljust(w0) + ' | ' + ' | '.join(rows[k].get(m, '-').ljust(w) for m, w in zip(modes, ws)))
PY
echo
echo "logs: $RES/<mode>/<comp>_<test>.log (with --show-diff), raw outputs: $RES/<mode>/files/"
} | tee "$RES/table.txt"
