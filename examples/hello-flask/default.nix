# The deploy example: a Flask web app whose #! interpreter is a CPython store
# path built from the host's own Python and Debian's Flask packages (see
# tests/fixtures/host.nix), for the Nomad walkthrough in the README.
#
#   nix-build examples/hello-flask --no-out-link \
#     --option sandbox false --option build-users-group "" --option substituters ""
{ nonce ? "" }:
let
  host = import ../../tests/fixtures/host.nix { inherit nonce; };
  python = host.pythonWith "host-python3-flask"
    [ "flask" "werkzeug" "jinja2" "markupsafe" "itsdangerous" "click" "blinker" ];
in
(host.base "hello-flask" ''
  set -e
  mkdir -p $out/bin
  printf '#!%s -I\n' ${python}/bin/python3 > $out/bin/hello-flask
  cat ${./app.py} >> $out/bin/hello-flask
  chmod 0555 $out/bin/hello-flask
'') // { meta.mainProgram = "hello-flask"; }
