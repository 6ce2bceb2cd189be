#!/bin/sh
# test.sh: install what the tests need, then run the whole suite.
#
#   ./test.sh [PYTEST-ARGS...]
#
# 1. As root, installs the Debian packages the suite talks to (sshd, mbsync,
#    mail and a local MTA, the C extsmail, Dovecot, mandoc, bats...) when
#    missing, and creates the system user roammail-test the test Dovecot
#    runs as (Dovecot refuses mail access as root).
# 2. Creates or refreshes the test virtualenv .venv-test (pytest,
#    pytest-shell, hypothesis, aiosmtpd, ruff, and roammail itself).
# 3. Installs roammail with ./install.sh into .test-prefix, so black-box
#    tests run the launchers a user would run (ROAMMAIL_PREFIX).
# 4. Runs ruff, mypy over lib/, lint-imports (the package contracts of
#    pyproject.toml), then the shell checker over the hooks and scripts,
#    mandoc -Tlint on every man page, and pytest (each test under a time
#    limit: a hang fails it).
# 5. As root, for a whole-suite run (no PYTEST-ARGS): builds the .deb from
#    the tracked files (dpkg-buildpackage -us -uc -b), checks it with
#    lintian (no error allowed), installs it with apt into the system (it
#    replaces the C extsmail for a while) and runs the black-box tests
#    against /usr/bin; then puts the C extsmail back.
#
# With CI=true nothing may be missing: a component that cannot be installed
# fails the run instead of skipping the tests that need it.
set -eu

cd "$(dirname "$0")"
top=$(pwd)
prog=test.sh
say() { echo "$prog: $*"; }
die() { echo "$prog: $*" >&2; exit 1; }

DEBS="openssh-server openssh-client isync bsd-mailx dma mandoc bats extsmail
msmtp swaks neomutt git-email python3-venv iproute2 procps man-db
libnss-wrapper inotify-tools libmailtools-perl rsync busybox-static strace
libarchive-tools pax dovecot-imapd openssl e2fsprogs shellcheck
debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
python3-wheel dpkg-dev lintian bash-completion python3-pyroute2 python3-jeepney
dbus-daemon libsasl2-modules-kdexoauth2"
# The user the test Dovecot (tests/peers/dovecot.py) runs as when we are root.
TEST_USER=roammail-test

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for pkg in $DEBS; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' ||
            missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        say "installing Debian packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null || die "apt-get update failed"
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing >/dev/null ||
            die "apt-get could not install:$missing"
    fi
    if ! id "$TEST_USER" >/dev/null 2>&1; then
        say "creating system user $TEST_USER"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$TEST_USER" || die "cannot create user $TEST_USER"
    fi
elif [ "${CI:-}" = true ]; then
    die "CI=true needs root to install the Debian packages the suite uses"
else
    say "not root: using the Debian packages already installed; tests whose peers are missing are skipped"
fi

python=${PYTHON:-python3}
venv=$top/.venv-test
if [ ! -x "$venv/bin/python3" ]; then
    say "creating $venv"
    "$python" -m venv "$venv" || die "cannot create $venv (Debian: apt-get install python3-venv)"
fi
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
    --upgrade -e "${top}[test]" 2>&1 | grep -v 'is ignored: it is neither' >&2 || true
"$venv/bin/python3" -c 'import mypy, importlinter, pytest, pytest_shell, pytest_timeout, hypothesis, aiosmtpd, docopt, daemon, inotify_simple, pyroute2, jeepney' ||
    die "the test virtualenv is incomplete: pip could not install the test dependencies"

prefix=$top/.test-prefix
./install.sh --prefix "$prefix" 2>&1 | grep -v 'is ignored: it is neither\|is not on your PATH' >&2 || true
[ -x "$prefix/bin/extsmail" ] || die "./install.sh failed"
ROAMMAIL_PREFIX=$prefix
export ROAMMAIL_PREFIX

say "ruff"
"$venv/bin/ruff" check -q lib tests bench || die "ruff found problems"

say "mypy"
( cd "$top" && "$venv/bin/mypy" ) || die "mypy found problems"

say "lint-imports"
( cd "$top" && PYTHONPATH=$top/lib "$venv/bin/lint-imports" --no-cache ) > "$top/.lint-imports.log" 2>&1 || {
    cat "$top/.lint-imports.log" >&2; die "lint-imports: a package contract is broken"; }

if command -v shellcheck >/dev/null 2>&1; then
    say "shellcheck"
    shellcheck hooks/mail-on-failure hooks/persistent-ssh install.sh test.sh .ci/run \
        lib/roammail/syncmail/remote.sh share/roammail/dedup-sendmail ||
        die "shellcheck found problems"
elif [ "${CI:-}" = true ]; then
    die "shellcheck is missing"
fi

if command -v mandoc >/dev/null 2>&1; then
    say "mandoc -Tlint"
    for page in man/*.[1-8]; do
        [ -f "$page" ] || continue
        mandoc -Tlint -Wwarning "$page" || die "mandoc -Tlint: $page has warnings"
    done
elif [ "${CI:-}" = true ]; then
    die "mandoc is missing"
fi

say "pytest"
status=0
"$venv/bin/python3" -m pytest --durations=15 "$@" || status=$?

# The tests that run against the packaged tools: every tool, through each
# library the .deb swaps in (docopt, pyinotify), without the C extsmail
# (the package replaces it while they run).
DEB_TESTS="tests/blackbox tests/watch_maildirs/test_watch_protocol.py
tests/extsmail/test_extsmaild_batch.py tests/extsmail/test_extsmaild_ssh.py
tests/extsmail/test_round_trip.py tests/watch_imap/test_watch_imap.py
tests/mswatch/test_mswatch_mbsync.py tests/mswatch/test_mswatch_imap.py
tests/syncmail/test_transfer.py tests/smtpdcheck/test_smtpdcheck_probe.py
tests/guards/test_inputkill.py tests/guards/test_socketwatch.py tests/hooks"

deb_check() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/roammail-deb.XXXXXX")
    mkdir "$work/roammail"
    if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$top" ls-files -z | tar --null -T - -cf - | tar -xf - -C "$work/roammail"
    else
        tar --exclude=./.venv-test --exclude=./.test-prefix --exclude=./.git -cf - . |
            tar -xf - -C "$work/roammail"
    fi
    say "dpkg-buildpackage (log: $work/build.log)"
    # Debian's own python3 and tools, whatever a developer's PATH puts first.
    ( cd "$work/roammail" &&
        PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b ) \
        > "$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; return 1; }
    say "lintian"
    lintian_status=0
    PATH=/usr/sbin:/usr/bin:/sbin:/bin lintian --fail-on error "$work"/roammail_*.changes \
        > "$work/lintian.log" 2>&1 || lintian_status=$?
    grep -v 'running with root privileges' "$work/lintian.log" || true
    [ "$lintian_status" = 0 ] || { echo "$prog: lintian found errors" >&2; return 1; }
    say "apt-get install $(basename "$work"/roammail_*.deb)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$work"/roammail_*.deb \
        >> "$work/build.log" 2>&1 || { tail -n 20 "$work/build.log" >&2; return 1; }
    say "pytest against /usr/bin"
    deb_status=0
    # shellcheck disable=SC2086
    # (less the two that build from the source tree, not from /usr, and
    # the slow ones: faults and timings, which the run above covers; here
    # what matters is what the package installs and the libraries it uses)
    ROAMMAIL_PREFIX=/usr "$venv/bin/python3" -m pytest -q -m "not slow" $DEB_TESTS \
        --deselect tests/blackbox/test_wheel.py \
        --deselect tests/blackbox/test_install.py::test_install_upgrade_uninstall_round_trip \
        || deb_status=$?
    say "putting the C extsmail back"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q extsmail >/dev/null 2>&1 ||
        say "could not reinstall extsmail: apt-get install extsmail"
    rm -rf "$work"
    return $deb_status
}

if [ $# -eq 0 ] && [ "$(id -u)" = 0 ] && command -v dpkg-buildpackage >/dev/null 2>&1; then
    deb_check || status=1
elif [ $# -eq 0 ] && [ "${CI:-}" = true ]; then
    die "CI=true: the .deb could not be built and tested (root and dpkg-buildpackage needed)"
fi
exit $status
