# The demo app: a Python script whose #! interpreter is a CPython store path
# built from the host's own Python (see tests/fixtures/host.nix).
#
#   nix-build examples/hello-python --no-out-link \
#     --option sandbox false --option build-users-group "" --option substituters ""
# `greeting` changes only the app's own store path (for update benchmarks).
{ nonce ? "", greeting ? "hello from a tote bundle" }:
let
  host = import ../../tests/fixtures/host.nix { inherit nonce; };
in
(host.base "hello-python" ''
  set -e
  mkdir -p $out/bin
  printf '#!%s -I\n' ${host.python}/bin/python3 > $out/bin/hello-python
  sed "s/hello from a tote bundle/${greeting}/" ${./hello.py} >> $out/bin/hello-python
  chmod 0555 $out/bin/hello-python
'') // { meta.mainProgram = "hello-python"; }
