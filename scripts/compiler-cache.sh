# Sourced by scripts/test.sh and scripts/fuzz.sh, with $here the source tree.
# Compiles through ccache when it is installed (scripts/setup.sh installs it),
# its cache kept in the tools folder, so that a fresh clone on a warm machine
# builds from what an earlier clone compiled. Paths under the source tree are
# hashed relative to it, so clones at other paths share the cache. Sets
# cache_flags to the cmake arguments that select the launcher.
cache_flags=()
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_DIR=${CCACHE_DIR:-${GRANARY_TOOLS:-$HOME/.cache/granary-tools}/ccache}
  export CCACHE_BASEDIR=$here CCACHE_NOHASHDIR=true
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-4G}
  cache_flags=(-DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
