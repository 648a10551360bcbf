#!/bin/ksh
# The classic wrapper script, written from the spec's description, for
# keepalived: on TERM or INT it writes the keepalived equivalent of
# `ifconfig -g carp carpdemote` (a priority drop, -100, into the track
# file), sleeps 15 s and hopes, un-demotes (0), and then stops the proxy.
# HUP is passed on. The benchmark's contender (b); not for production.
#
#   wrapper.ksh TRACK_FILE PROXY [ARGS...]
track=$1
shift
demote() {
	print -- "$1" >"$track.tmp" && mv "$track.tmp" "$track"
}
"$@" &
pid=$!
trap 'demote -100; sleep 15; demote 0; kill -TERM $pid' TERM INT
trap 'kill -HUP $pid' HUP
# A trapped signal ends `wait` early, after the trap has run: wait again for
# the proxy itself.
wait $pid
wait $pid
