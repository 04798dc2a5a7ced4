#!/bin/sh
# Create the versioned Docker secrets kraliki_<name>_v<N> that
# deploy/production.yml mounts, from a secrets file written by
# `kraliki keys generate` (env file or folder). A thin wrapper around
# `kraliki secrets docker-setup`, which feeds each value to
# `docker secret create` on standard input only.
#
# Usage: deploy/setup-docker-secrets.sh FILE [--version N] [--dry-run]
# KRALIKI_BIN names the kraliki binary (default: kraliki on PATH).
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 FILE [--version N] [--dry-run]" >&2
    exit 2
fi

"${KRALIKI_BIN:-kraliki}" secrets docker-setup "$@"

dry_run=no
file=
after_version=no
for arg in "$@"; do
    if [ "$after_version" = yes ]; then
        after_version=no
        continue
    fi
    case "$arg" in
        --dry-run) dry_run=yes ;;
        --version) after_version=yes ;;
        -*) ;;
        *) [ -n "$file" ] || file=$arg ;;
    esac
done

if [ "$dry_run" = no ]; then
    echo "The secrets are in Docker now; remove the plain copy on this host:" >&2
    if [ -d "$file" ]; then
        echo "  shred -u \"$file\"/* && rmdir \"$file\"" >&2
    else
        echo "  shred -u \"$file\"" >&2
    fi
fi
