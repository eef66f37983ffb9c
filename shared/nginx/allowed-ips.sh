#!/bin/sh
# Turns ALLOWED_IPS into nginx `allow` lines plus `deny all`, e.g.
#   ALLOWED_IPS="172.18.0.0/16;10.0.0.3;2001:db8::/32"
# Every entry is checked to be an IPv4 or IPv6 address or CIDR before it reaches the config;
# anything else stops the start with a message naming the entry, so nothing can be injected
# through the variable; so does a list with no entry. Mounted by the allow-list overlay
# (shared/compose/allow-list.yaml) only: without it, every client may connect.
# Run by the nginx image's entrypoint from /docker-entrypoint.d/ (POSIX sh: any nginx image).
set -eu
set -f  # entries are split on ; and : below; never expand them as file globs

out="${ALLOWED_IPS_CONF:-/etc/nginx/generated/server.d/allowed-ips.conf}"

fail() {
    echo "allowed-ips: ERROR: ALLOWED_IPS entry '$1' is not an IPv4/IPv6 address or CIDR ($2)." \
        "Fix ALLOWED_IPS, e.g. ALLOWED_IPS=\"10.0.0.0/8;192.0.2.7\"; the container will not start." >&2
    exit 1
}

is_number_upto() {  # $1 decimal digits without leading zeros, at most $2
    case $1 in '' | *[!0-9]* | 0?*) return 1 ;; esac
    [ ${#1} -le 3 ] && [ "$1" -le "$2" ]
}

is_ipv4() {
    case $1 in '' | *[!0-9.]* | .* | *. | *..*) return 1 ;; esac
    old_ifs=$IFS
    IFS=.
    # shellcheck disable=SC2086  # split into octets on purpose
    set -- $1
    IFS=$old_ifs
    [ $# -eq 4 ] || return 1
    for octet; do is_number_upto "$octet" 255 || return 1; done
}

is_ipv6() {
    case $1 in '' | *[!0-9A-Fa-f:]* | *:::* | :[!:]* | *[!:]:) return 1 ;; esac
    compressed=0
    case $1 in *::*::*) return 1 ;; *::*) compressed=1 ;; esac
    groups=0
    old_ifs=$IFS
    IFS=:
    for group in $1; do
        [ -z "$group" ] && continue
        [ ${#group} -le 4 ] || { IFS=$old_ifs; return 1; }
        groups=$((groups + 1))
    done
    IFS=$old_ifs
    if [ $compressed = 1 ]; then [ $groups -le 7 ]; else [ $groups -eq 8 ]; fi
}

[ -n "${ALLOWED_IPS:-}" ] || fail "" "empty: list the clients, or leave the allow-list overlay out"
lines=""
old_ifs=$IFS
IFS=';'
# shellcheck disable=SC2086  # split on ; on purpose (globbing is off)
set -- $ALLOWED_IPS
IFS=$old_ifs
for entry; do
    # "a; b" is fine, and so is a trailing ";"
    entry=$(printf '%s' "$entry" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    [ -n "$entry" ] || continue
    address=${entry%/*}
    case $entry in
        */*/*) fail "$entry" "more than one /" ;;
        */*) prefix=${entry#*/} ;;
        *) prefix=none ;;
    esac
    if is_ipv4 "$address"; then
        [ "$prefix" = none ] || is_number_upto "$prefix" 32 || fail "$entry" "IPv4 prefix must be 0-32"
    elif is_ipv6 "$address"; then
        [ "$prefix" = none ] || is_number_upto "$prefix" 128 || fail "$entry" "IPv6 prefix must be 0-128"
    else
        fail "$entry" "not an address"
    fi
    lines="${lines}allow $entry;
"
done
[ -n "$lines" ] || fail "$ALLOWED_IPS" "set, but lists no address"

mkdir -p "$(dirname "$out")"
{
    echo "# Generated at container start from ALLOWED_IPS by allowed-ips.sh; do not edit."
    echo "allow 127.0.0.1;    # the container's own healthcheck"
    echo "allow ::1;"
    printf '%s' "$lines"
    echo "deny all;"
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "allowed-ips: only these clients may connect: $(printf '%s' "$lines" | sed 's/allow //; s/;//' | tr '\n' ' ')" >&2
