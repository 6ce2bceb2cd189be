#!/bin/sh
# install.sh: install roammail's tools, man pages and hooks.
#
#   ./install.sh [--prefix DIR]        install or upgrade in place
#   ./install.sh [--prefix DIR] --uninstall
#   ./install.sh --prefix /usr --packaged --site DIR   (debian/rules)
#
# PREFIX defaults to ~/.local; DESTDIR is honoured for packagers (files go
# below $DESTDIR$PREFIX, launchers point at $PREFIX).  PYTHON names the
# interpreter (default python3).  The dependencies live in a private
# virtualenv, $PREFIX/lib/roammail/venv; each tool is a small launcher in
# $PREFIX/bin that runs that virtualenv's interpreter with -I -S (no user
# site, no site scan: extsmail runs for every mail and must start fast).
#
# The lists below say once what is installed; the manifest written at the
# end records it, and --uninstall walks the manifest.
#
# --packaged is for a distribution's package, whose build installs the
# roammail module and whose dependencies provide the rest: no virtualenv,
# no pip; the launchers run $PYTHON (an absolute path) with the module
# directory --site; systemd user units go to lib/systemd/user; no manifest
# (the package manager keeps the list).
set -eu

TOOLS="extsmail extsmaild watch-maildirs watch-imap inputkill socketwatch mswatch syncmail smtpdcheck
watch-network roammail-status"
# Extra names under which a tool is installed: ALIAS=TOOL.
ALIASES="watch_maildirs=watch-maildirs"
HOOKS="mail-on-failure persistent-ssh"
# Programs for the far side of an ssh external, in share/roammail.
SHARED="dedup-sendmail"

prog=install.sh
die() { echo "$prog: $*" >&2; exit 1; }

usage() {
    cat <<'EOF'
Usage:
  ./install.sh [--prefix DIR]              install or upgrade roammail
  ./install.sh [--prefix DIR] --uninstall  remove what was installed
  ./install.sh --prefix DIR --packaged --site DIR
                                           for a distribution's package
  ./install.sh -h | --help

Options:
  --prefix DIR   Where to install [default: ~/.local]; also $PREFIX.
  --uninstall    Remove exactly the files a previous install recorded.
  --packaged     The module and its dependencies are the system's (a
                 package installs them): write launchers, man pages,
                 hooks, units and completions only.
  --site DIR     With --packaged: the directory that holds the roammail
                 module (e.g. /usr/lib/python3/dist-packages).

Environment: DESTDIR (staging root for packagers), PYTHON (default python3).
EOF
}

prefix=${PREFIX:-}
uninstall=no
packaged=no
site=""
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --uninstall) uninstall=yes; shift ;;
        --packaged) packaged=yes; shift ;;
        --site) [ $# -ge 2 ] || die "--site needs a directory"; site=$2; shift 2 ;;
        --site=*) site=${1#--site=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1'; see --help" ;;
    esac
done
[ -n "$prefix" ] || prefix=${HOME:?HOME is not set}/.local
case $prefix in
    /*) ;;
    *) prefix=$(pwd)/$prefix ;;
esac
prefix=${prefix%/}
destdir=${DESTDIR:-}
root=$destdir$prefix
datadir=$root/share/roammail
manifest=$datadir/manifest
venv_rel=lib/roammail/venv

if [ "$uninstall" = yes ]; then
    [ -f "$manifest" ] || die "nothing to uninstall: $manifest does not exist"
    # Files first, then the directories we made, deepest first.
    while IFS= read -r path; do
        case $path in
            */) ;;
            *) rm -f "$root/$path" ;;
        esac
    done < "$manifest"
    rm -rf "${root:?}/$venv_rel"
    made=$(sort -r "$manifest.dirs" 2>/dev/null || true)
    rm -f "$manifest" "$manifest.dirs"
    rmdir "$datadir" "$root/lib/roammail" 2>/dev/null || true
    printf '%s\n' "$made" | while IFS= read -r dir; do
        if [ -n "$dir" ]; then rmdir "$root/$dir" 2>/dev/null || true; fi
    done
    echo "$prog: removed roammail from $root"
    exit 0
fi

src=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 ||
    die "$python not found: install Python 3.9 or newer (Debian: apt-get install python3)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "$python is older than 3.9"
if [ "$packaged" = yes ]; then
    [ -n "$site" ] || die "--packaged needs --site DIR, where the roammail module is"
    [ "$uninstall" = no ] || die "--uninstall is the package manager's job with --packaged"
    case $python in
        /*) ;;
        *) python=$(command -v "$python") ;;
    esac
elif [ -n "$site" ]; then
    die "--site goes with --packaged"
else
    "$python" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
        die "the venv module of $python is missing (Debian: apt-get install python3-venv)"
fi

installed=""
dirs=""
record() { installed="$installed$1
"; }
mkdirs() { # make and record each directory (and parent) this install creates
    for d in "$@"; do
        part=""
        old_ifs=$IFS; IFS=/
        for component in $d; do
            part=${part:+$part/}$component
            if [ ! -d "$root/$part" ]; then
                mkdir -p "$root/$part"
                dirs="$dirs$part
"
            fi
        done
        IFS=$old_ifs
    done
}

if [ "$packaged" = yes ]; then
    interpreter=$python
    unitdir=lib/systemd/user
else
    # The private virtualenv: created once, upgraded in place on every run.
    mkdirs lib lib/roammail
    venv=$root/$venv_rel
    if [ ! -x "$venv/bin/python3" ]; then
        "$python" -m venv "$venv" || die "cannot create the virtualenv $venv"
    fi
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
        --upgrade --upgrade-strategy only-if-needed "$src" ||
        die "pip could not install roammail and its dependencies into $venv"
    # A re-run with an unchanged version number must still replace the code.
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
        --force-reinstall --no-deps "$src" ||
        die "pip could not reinstall roammail into $venv"
    pyver=$("$venv/bin/python3" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    site=$prefix/$venv_rel/lib/python$pyver/site-packages
    interpreter=$prefix/$venv_rel/bin/python3
    # share/systemd/user: in systemd's user unit path both for
    # ~/.local ($XDG_DATA_HOME) and for /usr and /usr/local.
    unitdir=share/systemd/user
fi

mkdirs bin share share/roammail share/roammail/hooks

# One launcher per tool: the interpreter, the path, main().  It is read
# twice: first by /bin/sh, for which the second line refuses a directory as
# standard input (CPython would abort with "Fatal Python error" before any
# of our code runs) and execs the interpreter on this same file; then by
# Python, for which that line is a string.
# The module whose main() a tool runs: roammail.PACKAGE.MODULE.
module_of() { # TOOL
    case $1 in
        extsmail|extsmaild) echo "extsmail.$1" ;;
        inputkill|socketwatch) echo "guards.$1" ;;
        roammail-status) echo "status.cli" ;;
        *) echo "$(echo "$1" | tr - _).cli" ;;
    esac
}
write_launcher() { # NAME TOOL
    module=$(module_of "$2")
    tmp=$root/bin/.$1.tmp.$$
    cat > "$tmp" <<EOF
#!/bin/sh
''''[ ! -d /dev/stdin ] || { echo "$2: standard input is a directory" >&2; exit 66; }; exec "$interpreter" -IS "\$0" "\$@" # '''
import sys; sys.path[:0] = ["$site"]
from roammail.$module import main; sys.exit(main())
EOF
    chmod 755 "$tmp"
    mv -f "$tmp" "$root/bin/$1"
    record "bin/$1"
}
for tool in $TOOLS; do
    [ -f "$src/bin/$tool" ] || die "bin/$tool is missing from the source tree"
    write_launcher "$tool" "$tool"
done

for page in "$src"/man/*.[1-8]; do
    [ -f "$page" ] || continue
    name=$(basename "$page")
    section=${name##*.}
    mkdirs "share/man/man$section"
    install -m 644 "$page" "$root/share/man/man$section/$name"
    record "share/man/man$section/$name"
done

# An alias gets its launcher and, where the tool has a page, a page that
# points at it (man watch_maildirs).
for alias in $ALIASES; do
    write_launcher "${alias%%=*}" "${alias#*=}"
    if [ -f "$src/man/${alias#*=}.1" ]; then
        mkdirs share/man/man1
        printf '.so man1/%s.1\n' "${alias#*=}" > "$root/share/man/man1/${alias%%=*}.1"
        chmod 644 "$root/share/man/man1/${alias%%=*}.1"
        record "share/man/man1/${alias%%=*}.1"
    fi
done

for hook in $HOOKS; do
    [ -f "$src/hooks/$hook" ] || die "hooks/$hook is missing from the source tree"
    install -m 755 "$src/hooks/$hook" "$root/share/roammail/hooks/$hook"
    record "share/roammail/hooks/$hook"
done

for program in $SHARED; do
    [ -f "$src/share/roammail/$program" ] ||
        die "share/roammail/$program is missing from the source tree"
    install -m 755 "$src/share/roammail/$program" "$root/share/roammail/$program"
    record "share/roammail/$program"
done

if [ -d "$src/systemd" ]; then
    for unit in "$src"/systemd/*; do
        [ -f "$unit" ] || continue
        mkdirs "$unitdir"
        name=$(basename "$unit")
        sed "s|@BINDIR@|$prefix/bin|g" "$unit" > "$root/$unitdir/$name"
        chmod 644 "$root/$unitdir/$name"
        record "$unitdir/$name"
    done
fi

# Bash completion: one file per command, named as the command, where
# bash-completion's on-demand loading finds it.  roammail.completion makes
# them from the tools' usage texts, read from the source tree without
# importing the tools (a package's build has none of their dependencies).
compdir=share/bash-completion/completions
mkdirs "$compdir"
if [ "$packaged" = yes ]; then
    comp_python=$python
else
    comp_python=$venv/bin/python3
fi
# shellcheck disable=SC2086 # the lists are words
PYTHONPATH="$src/lib" "$comp_python" -m roammail.completion "$root/$compdir" $TOOLS $ALIASES ||
    die "could not write the bash completions into $root/$compdir"
for name in $TOOLS $ALIASES; do
    record "$compdir/${name%%=*}"
done

if [ "$packaged" = no ]; then
    # Keep what an earlier install recorded and this one did not write: a
    # later --uninstall must still remove it.
    if [ -f "$manifest" ]; then
        old=$(cat "$manifest")
        installed="$old
$installed"
    fi
    printf '%s' "$installed" | sed '/^$/d' | sort -u > "$manifest.new"
    mv -f "$manifest.new" "$manifest"
    if [ -f "$manifest.dirs" ]; then
        dirs="$(cat "$manifest.dirs")
$dirs"
    fi
    printf '%s' "$dirs" | sed '/^$/d' | sort -u > "$manifest.dirs.new"
    mv -f "$manifest.dirs.new" "$manifest.dirs"
fi

echo "$prog: installed roammail into $root"
case ":${PATH:-}:" in
    *":$prefix/bin:"*) ;;
    *) [ -n "$destdir" ] || echo "$prog: note: $prefix/bin is not on your PATH" ;;
esac
