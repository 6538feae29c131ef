# Benchmark closures, built from this host's programs (see tests/fixtures/host.nix).
#   small   a C program and glibc
#   medium  CPython, its standard library and some pure-Python packages;
#           the entry point is the interpreter (run as `app -c pass`)
#   large   medium plus gcc's library directory, /usr/include and perl's
#           library as data: hundreds of MB, over ten thousand files
# `version` changes only the app's own store path (for the update benchmark).
{ version ? "1" }:
let
  host = import ../tests/fixtures/host.nix { };
  inherit (host) base;
  python = host.pythonWith "bench-python3-with-packages" [
    "flask" "werkzeug" "jinja2" "markupsafe" "itsdangerous" "click" "blinker"
    "requests" "urllib3" "six.py" "idna" "certifi" "chardet" "pygments"
  ];
  data = name: paths: base name ''
    set -e
    mkdir -p $out
    for p in ${paths}; do mkdir -p $out$(dirname $p); cp -r $p $out$p; done
  '';
  app = name: refs: base name ''
    set -e
    mkdir -p $out/bin $out/share
    ln -s ${python}/bin/python3.11 $out/bin/app
    echo "version ${version}" > $out/share/version
    echo "${refs}" > $out/share/refs
  '';
in {
  small = (import ../tests/fixtures/closures.nix { }).probe;
  medium = app "bench-medium" "";
  large = app "bench-large" (toString [
    (data "bench-gcc" "/usr/lib/gcc/x86_64-linux-gnu/12")
    (data "bench-include" "/usr/include")
    (data "bench-perl" "/usr/share/perl /usr/lib/x86_64-linux-gnu/perl /usr/lib/x86_64-linux-gnu/perl-base")
  ]);
}
