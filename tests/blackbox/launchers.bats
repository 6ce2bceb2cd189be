#!/usr/bin/env bats
# Black-box checks of the installed launchers, run by bats-core through
# pytest (tests/conftest.py puts the installed tools first on PATH).

@test "every tool is on PATH from the installed prefix" {
  for tool in extsmail extsmaild watch-maildirs watch_maildirs watch-imap inputkill \
              socketwatch mswatch syncmail smtpdcheck watch-network roammail-status; do
    run command -v "$tool"
    [ "$status" -eq 0 ]
    [ "$output" = "$ROAMMAIL_PREFIX/bin/$tool" ]
  done
}

@test "a bad option is one line on stderr and a non-zero exit" {
  run --separate-stderr smtpdcheck --no-such-option
  [ "$status" -ne 0 ]
  [ "${#stderr_lines[@]}" -eq 1 ]
  [[ "$stderr" == smtpdcheck:* ]]
}
