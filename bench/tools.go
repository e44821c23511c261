package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// findNginx returns the path of nginx, or "".
func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if st, err := os.Stat("/usr/sbin/nginx"); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return "/usr/sbin/nginx"
	}
	return ""
}

// installTools installs wrk and nginx from Debian (apt-get) when the
// phases need them and they are missing. The package's service is kept
// from starting (on port 80, every interface) by a policy-rc.d that
// forbids service starts during the install.
func (b *bench) installTools(ctx context.Context) error {
	var want []string
	needWrk := b.s.has("A") || b.s.has("C")
	if needWrk {
		if _, err := exec.LookPath("wrk"); err != nil {
			want = append(want, "wrk")
		}
	}
	if b.s.has("A") && findNginx() == "" {
		want = append(want, "nginx")
	}
	if _, err := exec.LookPath("redis-server"); err != nil && b.s.has("F") {
		want = append(want, "redis-server")
	}
	if len(want) > 0 {
		if err := b.aptInstall(ctx, want); err != nil {
			return err
		}
	}
	if needWrk {
		p, err := exec.LookPath("wrk")
		if err != nil {
			return errors.New("wrk is still missing after the install")
		}
		b.wrkBin = p
	}
	if b.s.has("A") {
		if b.nginxBin = findNginx(); b.nginxBin == "" {
			return errors.New("nginx is still missing after the install")
		}
	}
	return nil
}

// aptInstall installs the packages (nginx-light for nginx when Debian
// has it) with apt-get, updating the package lists once when a package
// has no candidate.
func (b *bench) aptInstall(ctx context.Context, want []string) error {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("missing %s and no apt-get to install them", strings.Join(want, " "))
	}
	asRoot := func(args ...string) *exec.Cmd {
		if os.Geteuid() != 0 {
			args = append([]string{"sudo"}, args...)
		}
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd
	}
	b.logf("installing %s from Debian", strings.Join(want, " "))
	updated := false
	update := func() error {
		if updated {
			return nil
		}
		updated = true
		if err := asRoot("apt-get", "update").Run(); err != nil {
			return fmt.Errorf("apt-get update: %v", err)
		}
		return nil
	}
	var pkgs []string
	for _, p := range want {
		if aptCandidate(ctx, p) == "" {
			if err := update(); err != nil {
				return err
			}
		}
		if p == "nginx" && aptCandidate(ctx, "nginx-light") != "" {
			p = "nginx-light"
		}
		if aptCandidate(ctx, p) == "" {
			return fmt.Errorf("apt has no candidate for %s (apt-cache policy %s)", p, p)
		}
		pkgs = append(pkgs, p)
	}

	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := asRootWrite(ctx, policy, "#!/bin/sh\nexit 101\n"); err != nil {
			return fmt.Errorf("writing %s: %v", policy, err)
		}
		defer func() { _ = asRoot("rm", "-f", policy).Run() }()
	}
	install := func() error {
		cmd := asRoot(append([]string{"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends"}, pkgs...)...)
		return cmd.Run()
	}
	if err := install(); err != nil {
		// A stale package list: update it once and try again.
		if updated {
			return fmt.Errorf("apt-get install %s: %v", strings.Join(pkgs, " "), err)
		}
		if err := update(); err != nil {
			return err
		}
		if err := install(); err != nil {
			return fmt.Errorf("apt-get install %s: %v", strings.Join(pkgs, " "), err)
		}
	}
	return nil
}

// asRootWrite writes an executable file as root.
func asRootWrite(ctx context.Context, path, content string) error {
	if os.Geteuid() == 0 {
		return os.WriteFile(path, []byte(content), 0o755)
	}
	cmd := exec.CommandContext(ctx, "sudo", "sh", "-c", `cat >"$1" && chmod 755 "$1"`, "sh", path)
	cmd.Stdin = strings.NewReader(content)
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

// aptCandidate returns the version apt would install of pkg, or "".
func aptCandidate(ctx context.Context, pkg string) string {
	out, err := exec.CommandContext(ctx, "apt-cache", "policy", pkg).Output()
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Candidate:"); ok {
			if v = strings.TrimSpace(v); v != "(none)" {
				return v
			}
		}
	}
	return ""
}

// machine describes where the run took place.
type machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	MemoryGiB   string `json:"memory_gib"`
	Kernel      string `json:"kernel"`
	Go          string `json:"go"`
	Caddy       string `json:"caddy"`
	Nginx       string `json:"nginx,omitempty"`
	Wrk         string `json:"wrk,omitempty"`
	LoadAtStart string `json:"load_at_start"`
	LoadAtEnd   string `json:"load_at_end"`
}

// describeMachine fills in what does not depend on the run.
func (b *bench) describeMachine(ctx context.Context) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), CPUModel: "?", MemoryGiB: "?", Kernel: "?"}
	if bs, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(bs), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb, err := meminfoKB("MemTotal"); err == nil {
		m.MemoryGiB = strconv.FormatFloat(float64(kb)/(1<<20), 'f', 1, 64)
	}
	if bs, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(bs))
	}
	if out, err := exec.CommandContext(ctx, b.proxyBin, "version").Output(); err == nil {
		m.Caddy, _, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	}
	if b.nginxBin != "" {
		out, _ := exec.CommandContext(ctx, b.nginxBin, "-v").CombinedOutput()
		v := strings.TrimSpace(string(out))
		v = strings.TrimPrefix(v, "nginx version: ")
		m.Nginx = strings.TrimPrefix(v, "nginx/")
	}
	if b.wrkBin != "" {
		out, _ := exec.CommandContext(ctx, b.wrkBin, "-v").CombinedOutput() // exits 1
		if f := strings.Fields(string(out)); len(f) >= 2 {
			m.Wrk = f[1]
		}
	}
	m.LoadAtStart = loadAvg()
	return m
}

// meminfoKB returns a field of /proc/meminfo, in kB.
func meminfoKB(field string) (int64, error) {
	bs, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(bs), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/meminfo: no %s", field)
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	bs, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(bs))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// clockTicks returns the clock ticks per second of /proc/<pid>/stat.
func clockTicks(ctx context.Context) int64 {
	out, err := exec.CommandContext(ctx, "getconf", "CLK_TCK").Output()
	if err != nil {
		return 100 // USER_HZ on every Linux architecture Go runs on
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
}
