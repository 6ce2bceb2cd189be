# shellcheck shell=sh
# remote.sh: the program syncmail runs on the server, through ssh, as
#   exec /bin/sh -c PROGRAM syncmail-remote MAILDIR STAMP
# (remote.py sends this file's text as PROGRAM and speaks its line
# protocol, described there).  POSIX sh: dash, bash and busybox sh run it;
# it needs only find, tar, touch and rm (and wc and dd where find is not
# GNU find).  MAILDIR is the maildir as the user wrote it (~ and ~/ are
# the server's home); STAMP, touch -t's UTC stamp of "36 hours ago".
LC_ALL=C; export LC_ALL
umask 077
md=$1; stamp=$2
# A literal "~" or "~/...", as the user wrote it (syncmail quotes it): the
# server's home.
# shellcheck disable=SC2088
case $md in
"~") md=$HOME ;;
"~/"*) md=$HOME/${md#??} ;;
-*) md=./$md ;;
esac
cd "$md" 2>/dev/null || { printf 'E cannot change to the maildir\n'; exit 3; }
if [ ! -d new ] || [ ! -d tmp ]; then
  printf 'E not a maildir (no new/ or tmp/)\n'; exit 3
fi
printf 'H 3\n'
# some: true if one of its arguments (glob results) exists: an empty
# directory leaves its patterns unmatched, and then costs no process.
some() {
  for f do
    if [ -e "$f" ] || [ -L "$f" ]; then return 0; fi
  done
  return 1
}
if some tmp/* tmp/.[!.]* tmp/..?*; then
  ref=.syncmail-ref.$$
  if (cd tmp && TZ=UTC0 touch -t "$stamp" "$ref") 2>/dev/null; then
    (cd tmp && find . ! -name . -prune -type f ! -name "$ref" ! -newer "$ref" \
       -exec sh -c 'for f do printf "%s\000" "${f#./}"; done' sh {} +
     rm -f "$ref")
  fi
fi
printf '\000'
cd new || { printf 'E cannot change to new/\n'; exit 3; }
set -- * .[!.]* ..?*
gfind=
if some "$@"; then
  find . -prune -printf '' 2>/dev/null && gfind=1
  printf '%s\000' "$@"
  printf '\000'
  if [ -n "$gfind" ]; then
    find . ! -name . -prune -printf '%y %s %P\000' 2>/dev/null
  else
    # dd gathers the records into large writes: a write per record would
    # be an ssh packet per record.
    for e do
      if [ -L "$e" ]; then t=l
      elif [ -f "$e" ]; then t=f
      elif [ -d "$e" ]; then t=d
      elif [ -e "$e" ]; then t=o
      else continue
      fi
      printf '%s - %s\000' "$t" "$e"
    done | dd ibs=65536 obs=65536 2>/dev/null
  fi
else
  # Nothing in new/: nothing to ask for.  Ending now spares the client a
  # round trip (its Q) before ssh exits.
  printf '\000\000'
  exit 0
fi
printf '\000'
set -f
# refs SPEC: R, the quoted words of SPEC's files, and I, SPEC's words.
# Each SPEC given as indices is remembered as number nS for "=N".
refs() {
  R=; I=
  [ $# -gt 0 ] || return 0
  for r do
    case $r in
    =*) n=${r#=}
        case $n in ''|*[!0-9]*) return 1 ;; esac
        [ $# -eq 1 ] && [ "$n" -ge 1 ] && [ "$n" -le "$nS" ] || return 1
        eval "R=\"\$R\$bR$n\"; I=\"\$I\$bI$n\""; return 0 ;;
    ''|*[!0-9-]*|-*|*-|*-*-*) return 1 ;;
    *-*) words "${r%-*}" "${r#*-}" ;;
    *) R="$R \"./\${$r}\"" ;;
    esac
    I="$I $r"
  done
  nS=$((nS+1)); eval "bR$nS=\$R; bI$nS=\$I"
}
# words A B: add the words of files A to B to R.  Ten words a step and a
# hundred a piece: a loop turn a file, each adding to one long string,
# costs a shell about 10 us a file and grows with the batch.
words() {
  a=$1
  while [ $((a+99)) -le "$2" ]; do
    S=; c=$((a+100))
    while [ "$a" -lt "$c" ]; do ten; done
    R="$R$S"
  done
  S=
  while [ $((a+9)) -le "$2" ]; do ten; done
  while [ "$a" -le "$2" ]; do S="$S \"./\${$a}\""; a=$((a+1)); done
  R="$R$S"
}
ten() {
  S="$S \"./\${$a}\" \"./\${$((a+1))}\" \"./\${$((a+2))}\" \"./\${$((a+3))}\""
  S="$S \"./\${$((a+4))}\" \"./\${$((a+5))}\" \"./\${$((a+6))}\""
  S="$S \"./\${$((a+7))}\" \"./\${$((a+8))}\" \"./\${$((a+9))}\""
  a=$((a+10))
}
nR=0; nW=0; nS=0; tarq=; tarknown=; ri=
while IFS= read -r line; do
  cmd=${line%% *}; spec=${line#"$cmd"}
  # SPEC's words, split (set -f: no globbing).
  # shellcheck disable=SC2086
  refs $spec || { printf 'E bad request\n'; exit 3; }
  case $cmd in
  C) if [ -z "$R" ]; then :
     elif [ -n "$gfind" ]; then eval "find $R -prune -type f -printf '%s %p\n'" 2>/dev/null
     else eval "find $R -prune -type f -exec wc -c {} +" 2>/dev/null
     fi
     printf 'END\n' ;;
  T) if [ -z "$tarknown" ]; then
       # GNU tar unquotes backslash escapes in operand names unless told not to.
       case $(tar --version 2>/dev/null) in *GNU*) tarq=--no-unquote ;; esac
       tarknown=1
     fi
     if [ -n "$R" ]; then eval "tar cf - $tarq -- $R"; st=$?; else st=0; fi
     printf '%-511s\n' "T $st" ;;
  R) nR=$((nR+1)); p=
     if [ -n "$R" ]; then eval "rm -f -- $R" & p=$!; fi
     eval "rmpid$nR=\$p; rmI$nR=\$I" ;;
  W) [ "$nW" -lt "$nR" ] || { printf 'E bad request\n'; exit 3; }
     nW=$((nW+1)); eval "p=\$rmpid$nW; ri=\$rmI$nW"; unset "rmpid$nW" "rmI$nW"
     st=0
     if [ -n "$p" ]; then wait "$p"; st=$?; fi
     if [ "$st" -ne 0 ]; then
       for r in $ri; do
         a=${r%-*}
         while [ "$a" -le "${r#*-}" ]; do
           eval "f=\${$a}"
           if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\n' "$a"; fi
           a=$((a+1))
         done
       done
     fi
     printf 'END\n' ;;
  Q) exit 0 ;;
  *) printf 'E bad request\n'; exit 3 ;;
  esac
done
