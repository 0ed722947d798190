# Shared helpers for warmstart's shell scripts (sourced, not run).
log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# The Debian mirror this host's apt sources already name (the only archive reachable here).
debian_mirror() {
  { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } \
    | grep -E '^(URIs:|deb )' | grep -v security | grep -oE 'https?://[^ ]+/debian/?' | head -1 || true
}
