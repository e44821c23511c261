package caddymodule

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/listencheck"
)

func TestCheckListenAddrs(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	_, port, _ := net.SplitHostPort(addr)

	dir, err := os.MkdirTemp("", "cl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "live.sock")
	live, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	t.Setenv("TEST_LISTEN_PORT", port)

	for _, tc := range []struct {
		addrs []string
		taken string // "" for none
	}{
		{[]string{addr}, addr},
		{[]string{"tcp/" + addr}, addr},
		{[]string{"127.0.0.1:{env.TEST_LISTEN_PORT}"}, addr},
		{[]string{":" + port}, ":" + port},
		// This process's own socket: a reload binds it again.
		{[]string{"unix/" + sock + "|0600"}, ""},
		{[]string{"unix/" + filepath.Join(dir, "none.sock")}, ""},
		{[]string{"127.0.0.1:0", "fd/3", "udp/" + addr}, ""},
	} {
		err := checkListenAddrs(tc.addrs)
		var inUse *listencheck.InUseError
		switch {
		case tc.taken == "" && err != nil:
			t.Errorf("%q: %v, want no error", tc.addrs, err)
		case tc.taken != "" && (!errors.As(err, &inUse) || !strings.HasPrefix(err.Error(), tc.taken+" is already in use")):
			t.Errorf("%q: %v, want %s is already in use", tc.addrs, err, tc.taken)
		}
	}
}

func TestCheckListenAddrsPortRange(t *testing.T) {
	// A range is checked port by port: hold the second of two ports.
	var lns []net.Listener
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	a0, a1 := lns[0].Addr().(*net.TCPAddr), lns[1].Addr().(*net.TCPAddr)
	if a1.Port != a0.Port+1 {
		for _, ln := range lns {
			ln.Close()
		}
		t.Skip("no two consecutive free ports")
	}
	lns[0].Close()
	defer lns[1].Close()
	rng := "127.0.0.1:" + strconv.Itoa(a0.Port) + "-" + strconv.Itoa(a1.Port)
	if err := checkListenAddrs([]string{rng}); err == nil || err.Error() != lns[1].Addr().String()+" is already in use" {
		t.Fatalf("range %s with its second port held: %v", rng, err)
	}
}
