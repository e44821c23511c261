#!/usr/bin/env bash
# Memory of a large upload through the proxy: builds apic-auth-proxy and the
# simulator, starts both on loopback (the proxy on a unix socket, logged in
# as the simulator's developer user), streams a multipart body of
# UPLOAD_BYTES (default 1 GiB) of zeros to the simulator's publish endpoint
# once chunked (unknown length) and once with a Content-Length, checks the
# byte count and SHA-256 the simulator received, and reports the proxy's
# peak RSS (VmHWM) during each upload. Needs Go, curl and Linux's /proc.
#
#   bench/upload-rss.sh                       # 1 GiB, both modes
#   UPLOAD_BYTES=$((256<<20)) MODES=length bench/upload-rss.sh
#
# Standard output is one line per upload, for other scripts to parse:
#   upload=chunked bytes=1073741992 seconds=6.54 MiB/s=156.6 proxy_rss_before_MiB=56.2 proxy_peak_rss_MiB=72.8 sha256_ok=yes
# Progress goes to standard error. Exits non-zero when an upload fails or
# the simulator received other bytes than were sent.
set -euo pipefail
cd "$(dirname "$0")/.."

size=${UPLOAD_BYTES:-$((1 << 30))}
modes=${MODES:-chunked length}
log() { printf '%s\n' "$*" >&2; }

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

log "building into $work"
go build -o "$work/apic-auth-proxy" ./cmd/apic-auth-proxy
go build -o "$work/apicsim" ./cmd/apicsim

# waitfor <seconds> <command...>: poll until the command succeeds.
waitfor() {
	local deadline=$((SECONDS + $1)); shift
	until "$@"; do
		if ((SECONDS >= deadline)); then return 1; fi
		sleep 0.1
	done
}

# The simulator on a port the kernel picks; it logs the address.
"$work/apicsim" -quiet -listen 127.0.0.1:0 2>"$work/sim.log" &
pids+=($!)
sim_addr() { sed -n 's|.*API Connect simulator on \(http://[^ ]*\).*|\1|p' "$work/sim.log"; }
waitfor 10 grep -q 'API Connect simulator on' "$work/sim.log" || { cat "$work/sim.log" >&2; exit 1; }
sim=$(sim_addr)
log "simulator at $sim"

sock=$work/proxy.sock
APIC_SERVER=$sim APIC_REALM=provider/default-idp-2 APIC_USERNAME=developer \
APIC_PASSWORD='Passw0rd!' APIC_CLIENT_ID=clientID APIC_CLIENT_SECRET=clientPassword \
	"$work/apic-auth-proxy" apic-proxy --from "unix/$sock" >"$work/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
waitfor 30 test -S "$sock" || { cat "$work/proxy.log" >&2; exit 1; }
curl -sS --fail --unix-socket "$sock" -o /dev/null http://localhost/api/me # log in
log "proxy pid $proxy on $sock, logged in"

# status_mib <field>: a /proc/<proxy>/status field (kB) in MiB.
status_mib() { awk -v f="$1:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$proxy/status"; }
log "proxy idle: VmRSS $(status_mib VmRSS) MiB, VmHWM $(status_mib VmHWM) MiB"

boundary=apic-upload-rss-$$
# printf -v: $(...) would drop the trailing newline.
printf -v pre -- '--%s\r\nContent-Disposition: form-data; name="product"; filename="product.bin"\r\nContent-Type: application/octet-stream\r\n\r\n' "$boundary"
printf -v post -- '\r\n--%s--\r\n' "$boundary"
total=$((${#pre} + size + ${#post}))
body() { printf '%s' "$pre"; head -c "$size" /dev/zero; printf '%s' "$post"; }

mkfifo "$work/hash.fifo"
failed=0
for mode in $modes; do
	hdr=()
	case $mode in
	chunked) ;;
	length) hdr=(-H 'Transfer-Encoding:' -H "Content-Length: $total") ;;
	*) log "unknown mode $mode (want chunked or length)"; exit 2 ;;
	esac
	# Reset the peak RSS to the current RSS (Linux 4.0+), so that each
	# upload's peak is its own.
	before=$(status_mib VmRSS)
	hwm_reset=yes
	echo 5 >"/proc/$proxy/clear_refs" 2>/dev/null || hwm_reset=no
	sha256sum <"$work/hash.fifo" >"$work/sent.sha256" &
	hasher=$!
	log "upload=$mode: $total bytes"
	# -T - streams standard input (--data-binary @- would read it all
	# into curl's memory first), chunked unless Transfer-Encoding is
	# emptied and a Content-Length given.
	stats=$(body | tee "$work/hash.fifo" | curl -sS -v --unix-socket "$sock" -X POST -T - \
		-H "Content-Type: multipart/form-data; boundary=$boundary" "${hdr[@]}" \
		-o "$work/resp.json" -w '%{http_code} %{size_upload} %{time_total}' \
		http://localhost/api/catalogs/org1/sandbox/publish 2>"$work/curl.err") || {
		cat "$work/curl.err" >&2; exit 1
	}
	wait "$hasher"
	peak=$(status_mib VmHWM)
	read -r code sent seconds <<<"$stats"
	# The request went out as intended.
	if [ "$mode" = chunked ]; then
		grep -qi '^> Transfer-Encoding: chunked' "$work/curl.err" || { log "curl did not send chunked"; exit 1; }
	else
		grep -qi "^> Content-Length: $total" "$work/curl.err" && ! grep -qi '^> Transfer-Encoding' "$work/curl.err" ||
			{ log "curl did not send a Content-Length"; exit 1; }
	fi
	resp=$(cat "$work/resp.json")
	got_bytes=$(sed -n 's/.*"received_bytes":\([0-9]*\).*/\1/p' <<<"$resp")
	got_sha=$(sed -n 's/.*"sha256":"\([0-9a-f]*\)".*/\1/p' <<<"$resp")
	want_sha=$(cut -d' ' -f1 "$work/sent.sha256")
	ok=yes
	if [ "$code" != 201 ] || [ "$got_bytes" != "$total" ] || [ "$got_sha" != "$want_sha" ]; then
		ok=no failed=1
		log "status $code, sent $sent bytes sha256 $want_sha; simulator: $resp"
	fi
	[ "$hwm_reset" = yes ] || log "(VmHWM could not be reset: the peak is the process's so far)"
	awk -v m="$mode" -v b="$total" -v s="$seconds" -v r="$before" -v p="$peak" -v ok="$ok" \
		'BEGIN { printf "upload=%s bytes=%d seconds=%.2f MiB/s=%.1f proxy_rss_before_MiB=%s proxy_peak_rss_MiB=%s sha256_ok=%s\n", m, b, s, b / s / 1048576, r, p, ok }'
done
exit "$failed"
