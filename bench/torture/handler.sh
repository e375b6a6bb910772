#!/bin/sh
# The command the torture runs under `dlq queue pop --exec`: the body is "ID PAUSE_MS". It records
# that it started on ID, works PAUSE_MS, records that it handled ID and exits 0 (ack). A poison ID
# fails on purpose every time, so that dlq dead-letters it after --max-attempts. One line per
# record, appended (O_APPEND: lines from racing handlers never interleave).
read -r id ms || [ -n "$id" ] || exit 4
log="$TORTURE_HANDLED"
echo "start $id $DLQ_MESSAGE_ATTEMPT $$ $PPID $(date +%s%3N)" >>"$log"
case "$id" in *poison*) exit 3 ;; esac
[ "${ms:-0}" -gt 0 ] && sleep "$(printf '0.%03d' "$ms")"
echo "ok $id $DLQ_MESSAGE_ATTEMPT $$ $PPID $(date +%s%3N)" >>"$log"
exit 0
